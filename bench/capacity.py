"""Measurement 1a, in-flight capacity: N agents with model latency L, all in flight at once.

- F, the floor: `bench.floor`, the agents through `asyncio.gather` in one plain process.
- T: agentexec, one worker process with `AGENTEXEC_NUM_WORKERS=1000`, the burst enqueued
  concurrently (`bench.burst`); the peak RSS of the worker process tree.
- Scale-out: the same burst on 2 worker processes (1000 slots each).
"""

from __future__ import annotations

from bench.common import (
    Case,
    Results,
    Row,
    by_run,
    paired_ratios,
    python_module,
    summarize,
    values,
    verdict,
)

SIZES = {"quick": {"n": 50, "latency": 0.5}, "full": {"n": 1000, "latency": 5.0}}
SLOTS = 1000


def cases(size: str) -> list[Case]:
    n, latency = SIZES[size]["n"], SIZES[size]["latency"]
    floor = python_module("bench.floor", "--n", n, "--latency", latency)
    out = [Case("capacity.floor", floor, timeout=180)]
    # The quick smoke check runs 2 processes in bench.throughput only.
    for procs in (1, 2) if size == "full" else (1,):
        argv = python_module(
            "bench.burst", "--system", "agentexec", "--work", "agent", "--n", n,
            "--latency", latency, "--procs", procs, "--slots", SLOTS, "--db", "postgresql",
        )  # fmt: skip
        out.append(Case(f"capacity.agentexec.{procs}", argv, timeout=300))
    return out


def rows(results: Results, size: str) -> list[Row]:
    n, latency = SIZES[size]["n"], SIZES[size]["latency"]
    where = f"N={n:,}, L={latency:g} s"
    floor = by_run(results, "capacity.floor", "wall_s")
    f = summarize(values(floor))
    out = [Row(f"1. F: asyncio.gather, one plain process, {where}", "floor (SDK only)",
               f.fmt(2, " s") if f else "failed")]  # fmt: skip
    for procs in (1, 2):
        key = f"capacity.agentexec.{procs}"
        if key not in results:
            continue
        label = "1 worker process" if procs == 1 else "2 worker processes"
        t_vals = by_run(results, key, "wall_s")
        t = summarize(values(t_vals))
        t_over_f = paired_ratios(t_vals, floor)
        t_over_2l = summarize(values(by_run(results, key, "t_over_2l")))
        rss = summarize(values(by_run(results, key, "peak_rss_mb")))
        cpu = summarize(values(by_run(results, key, "worker_cpu_s")))
        out += [
            Row(f"1. T: {label}, {SLOTS} slots{' each' if procs > 1 else ''}, {where}", "agentexec",
                t.fmt(2, " s") if t else "failed"),
            Row(f"1. T/F, {label}", "agentexec", t_over_f.fmt(2) if t_over_f else "—",
                target=("≤ 1.3" + verdict(t_over_f.median if t_over_f else None, at_most=1.3))
                if procs == 1 else ""),
            Row(f"1. T/(2L), {label}", "agentexec", t_over_2l.fmt(2) if t_over_2l else "—"),
            Row(f"1. peak RSS of the worker tree, {label}", "agentexec",
                rss.fmt(0, " MB") if rss else "—",
                target=("≤ 500 MB" + verdict(rss.median if rss else None, at_most=500))
                if procs == 1 else ""),
            Row(f"1. worker CPU time, {label}", "agentexec", cpu.fmt(1, " s") if cpu else "—"),
        ]  # fmt: skip
    fcpu = summarize(values(by_run(results, "capacity.floor", "cpu_s")))
    out.append(Row("1. floor CPU time", "floor (SDK only)", fcpu.fmt(1, " s") if fcpu else "—"))
    return out
