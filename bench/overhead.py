"""Measurement 2, overhead: end-to-end throughput of no-op tasks, from the first enqueue to
the last result, on one worker process with the threads pool at the same concurrency.

- agentexec `bench_noop` with activity tracking, on SQLite and on PostgreSQL;
- bare Celery `bare.noop`, identical worker settings (threads, -c, prefetch 1, late acks,
  events), no database;
- upstream agentexec 0.3.0 no-op, 4 workers, PostgreSQL (bench/upstream/run_upstream.py).
"""

from __future__ import annotations

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

SIZES = {"quick": {"n": 200}, "full": {"n": 2000}}
#: Worker concurrency of both systems: agentexec's default AGENTEXEC_NUM_WORKERS.
SLOTS = 100


def _burst(system: str, n: int, db: str = "postgresql") -> list[str]:
    return python_module(
        "bench.burst", "--system", system, "--work", "noop", "--n", n, "--procs", 1,
        "--slots", SLOTS, "--db", db,
    )  # fmt: skip


#: Left out of the quick smoke check: the same code paths as other cases, and slow to start.
QUICK_SKIP = {"overhead.ax_postgresql", "overhead.upstream"}


def cases(size: str) -> list[Case]:
    n = SIZES[size]["n"]
    out = [
        Case("overhead.ax_sqlite", _burst("agentexec", n, "sqlite"), 300),
        Case("overhead.ax_postgresql", _burst("agentexec", n, "postgresql"), 300),
        Case("overhead.bare", _burst("bare-threads", n), 300),
        upstream_case("overhead.upstream", "noop", n, workers=4),
    ]
    return [c for c in out if size == "full" or c.key not in QUICK_SKIP]


def rows(results: Results, size: str) -> list[Row]:
    n = SIZES[size]["n"]
    bare = by_run(results, "overhead.bare", "rate_per_s")
    up = by_run(results, "overhead.upstream", "tasks_per_s")
    out = []
    systems = (
        ("ax_sqlite", "agentexec", "agentexec with tracking, SQLite", "rate_per_s"),
        ("ax_postgresql", "agentexec", "agentexec with tracking, PostgreSQL", "rate_per_s"),
        ("bare", "bare Celery", f"bare Celery, threads -c {SLOTS}", "rate_per_s"),
        ("upstream", "upstream 0.3.0", "upstream 0.3.0, 4 workers, PostgreSQL", "tasks_per_s"),
    )
    for key, system, label, metric in systems:
        vals = by_run(results, f"overhead.{key}", metric)
        s = summarize(values(vals))
        value = s.fmt(0) if s else "failed"
        row = Row(f"2. no-op tasks/s, n={n:,}: {label}", system, value, key=f"overhead.{key}")
        if system == "agentexec":
            vs_bare = ratio_of_medians(vals, bare)
            row.vs_bare = fmt_ratio(vals, bare)
            row.target = f"≥ 0.6{TIMES} bare" + verdict(vs_bare, at_least=0.6)
            if key == "ax_postgresql":
                vs_up = ratio_of_medians(vals, up)
                row.vs_upstream = fmt_ratio(vals, up)
                row.target += f", ≥ 1.5{TIMES} upstream" + verdict(vs_up, at_least=1.5)
        out.append(row)
    return out
