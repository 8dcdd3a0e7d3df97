"""The floor F: N scripted agents through `asyncio.gather` in one plain process.

Same SDK and model as every other system, no queue, no database. One untimed agent warms the
SDK up first, as a running worker is warm.

    uv run python -m bench.floor --n 1000 --latency 5     # prints one JSON line
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench.common import client_cpu_seconds, disable_tracing, emit, run_plain_agent


async def floor(n: int, latency: float) -> dict[str, Any]:
    """Run `n` agents concurrently; wall time and CPU time of the process."""
    await run_plain_agent(-1, 0.0)
    cpu0 = client_cpu_seconds()
    t0 = time.perf_counter()
    finals = await asyncio.gather(*(run_plain_agent(i, latency) for i in range(n)))
    wall = time.perf_counter() - t0
    cpu = client_cpu_seconds() - cpu0
    completed = sum(1 for i, f in enumerate(finals) if f == f"done {i}")
    return {
        "system": "floor",
        "n": n,
        "latency": latency,
        "wall_s": round(wall, 4),
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_agent": round(1000 * cpu / n, 3),
        "completed": completed,
        "agents_per_s": round(n / wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=5.0)
    args = parser.parse_args()
    disable_tracing()
    emit(asyncio.run(floor(args.n, args.latency)))


if __name__ == "__main__":
    main()
