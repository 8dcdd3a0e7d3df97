"""Measurement 1b, throughput at L=1 s: agents completed per second, each system kept busy
for about 20 s by a burst sized to its speed.

- agentexec, 1 worker process with 1000 slots, and 2 processes (`bench.burst`);
- bare Celery, threads pool with the same concurrency and one shared loop, no tracking;
- bare Celery, prefork at its default concurrency, `asyncio.run` per task;
- upstream agentexec 0.3.0 with 4 (its default) and 8 workers (bench/upstream/run_upstream.py,
  whose rate counts until the activity is written, as ours does).
"""

from __future__ import annotations

from typing import Any

from bench.common import (
    TIMES,
    Case,
    Results,
    Row,
    by_run,
    fmt_ratio,
    python_module,
    ratio_of_medians,
    summarize,
    upstream_case,
    values,
    verdict,
)

SLOTS = 1000
#: Burst sizes: about 20 s of work for each system at L=1 s on a 2-core machine.
SIZES: dict[str, dict[str, Any]] = {
    "quick": {
        "latency": 0.2,
        "n": {"ax1": 100, "ax2": 100, "threads": 100, "prefork": 6, "up4": 8, "up8": 8},
    },
    "full": {
        "latency": 1.0,
        "n": {"ax1": 1300, "ax2": 1800, "threads": 2000, "prefork": 20, "up4": 40, "up8": 80},
    },
}
SYSTEMS = {
    "ax1": ("agentexec", "agentexec, 1 worker process, 1000 slots"),
    "ax2": ("agentexec", "agentexec, 2 worker processes, 1000 slots each"),
    "threads": ("bare Celery", "threads pool -c 1000, one shared loop, no tracking"),
    "prefork": ("bare Celery", "prefork at default concurrency, asyncio.run per task"),
    "up4": ("upstream 0.3.0", "4 workers (default)"),
    "up8": ("upstream 0.3.0", "8 workers"),
}
#: The agents/s figure each case reports.
METRIC = {"up4": "agents_per_s", "up8": "agents_per_s"}


def _burst(system: str, n: int, latency: float, procs: int = 1) -> list[str]:
    return python_module(
        "bench.burst", "--system", system, "--work", "agent", "--n", n, "--latency", latency,
        "--procs", procs, "--slots", SLOTS, "--db", "postgresql",
    )  # fmt: skip


#: Left out of the quick smoke check: the same code paths as other cases, and slow to start.
QUICK_SKIP = {"throughput.ax1", "throughput.up8"}


def cases(size: str) -> list[Case]:
    latency, n = SIZES[size]["latency"], SIZES[size]["n"]
    out = [
        Case("throughput.ax1", _burst("agentexec", n["ax1"], latency), 300),
        Case("throughput.ax2", _burst("agentexec", n["ax2"], latency, procs=2), 300),
        Case("throughput.threads", _burst("bare-threads", n["threads"], latency), 300),
        Case("throughput.prefork", _burst("bare-prefork", n["prefork"], latency), 300),
        upstream_case("throughput.up4", "throughput", n["up4"], workers=4, latency=latency),
        upstream_case("throughput.up8", "throughput", n["up8"], workers=8, latency=latency),
    ]
    return [c for c in out if size == "full" or c.key not in QUICK_SKIP]


def rate(results: Results, name: str) -> list[float | None]:
    return by_run(results, f"throughput.{name}", METRIC.get(name, "rate_per_s"))


def rows(results: Results, size: str) -> list[Row]:
    latency, n = SIZES[size]["latency"], SIZES[size]["n"]
    bare, up = rate(results, "threads"), rate(results, "up4")
    out = []
    for name, (system, label) in SYSTEMS.items():
        vals = rate(results, name)
        s = summarize(values(vals))
        row = Row(
            f"1. throughput, L={latency:g} s, agents/s: {label} (burst of {n[name]:,})",
            system,
            s.fmt(1) if s else "failed",
            key=f"throughput.{name}",
        )
        if name == "ax1":
            vs_bare, vs_up = ratio_of_medians(vals, bare), ratio_of_medians(vals, up)
            row.vs_bare, row.vs_upstream = fmt_ratio(vals, bare), fmt_ratio(vals, up, 0)
            row.target = (
                f"≥ 0.8{TIMES} bare" + verdict(vs_bare, at_least=0.8)
                + f", ≥ 50{TIMES} upstream" + verdict(vs_up, at_least=50)
            )  # fmt: skip
        if name == "ax2":
            scale = ratio_of_medians(vals, rate(results, "ax1"))
            row.vs_upstream = fmt_ratio(vals, up, 0)
            shown = "—" if scale is None else f"{scale:.2f}{TIMES}"
            row.target = f"2 vs 1 process: {shown} (≥ 1.7{TIMES})" + verdict(scale, at_least=1.7)
        out.append(row)
    for name in ("ax1", "ax2", "threads"):
        system, label = SYSTEMS[name]
        key = f"throughput.{name}"
        cpu = values(by_run(results, key, "worker_cpu_s"))
        per_agent = summarize(1000 * c / n[name] for c in cpu)
        client = summarize(1000 * c / n[name] for c in values(by_run(results, key, "client_cpu_s")))
        out.append(
            Row(
                f"1. CPU ms per agent, worker / measuring client: {label}",
                system,
                f"{per_agent.median:.1f} / {client.median:.1f}" if per_agent and client else "—",
                key=key,
            )
        )
    return out
