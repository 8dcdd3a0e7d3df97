"""Startup costs a user meets first, against `import celery` measured in the same run.

    uv run python -m bench.startup [--runs 9]

Each case is a fresh interpreter, timed from spawn to exit (wall clock); the cases run
round-robin so a busy machine slows them alike, and the medians are compared:

- `import agentexec`: target at most 0.5 s, or at most 2x `import celery`;
- `agentexec --help`: target at most 1 s;
- `agentexec check` against live services (Redis on 127.0.0.1, a SQLite activity database
  and one worker started here): target at most 2 s.

Also shown, for scale: importing what a producer uses (`ax.enqueue` and `ax.Base`) next to
`celery.Celery()`. Bytecode caching is on for the children (a warm-up run writes the
`.pyc` files, as the first run after any install does), whatever PYTHONDONTWRITEBYTECODE says.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import REDIS_URL, REPO_ROOT, delete_keys, queue_key_patterns

PY = sys.executable


def _cases() -> dict[str, list[str]]:
    return {
        "import celery": [PY, "-c", "import celery"],
        "import agentexec": [PY, "-c", "import agentexec"],
        "agentexec --help": [PY, "-m", "agentexec", "--help"],
        "agentexec check": [PY, "-m", "agentexec", "check"],
        "celery.Celery()": [PY, "-c", "import celery; celery.Celery()"],
        "ax.enqueue + ax.Base": [PY, "-c", "import agentexec as ax; ax.enqueue; ax.Base"],
    }


def _time(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    out = subprocess.run(argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv[1:])} failed:\n{out.stdout}{out.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="runs per case (default 9)")
    args = parser.parse_args()

    from agentexec.processes import WorkerProcess, celery_worker_argv

    prefix = f"bench-startup-{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="agentexec-startup-"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(
        REDIS_URL=REDIS_URL,
        DATABASE_URL=f"sqlite:///{tmp}/activity.db",
        AGENTEXEC_QUEUE_PREFIX=prefix,
    )
    subprocess.run([PY, "-m", "agentexec", "create-tables"], env=env, check=True, cwd=REPO_ROOT,
                   capture_output=True)  # fmt: skip
    worker = WorkerProcess(celery_worker_argv(name="startup"), env, REPO_ROOT, tmp / "worker.log")
    worker.start()
    cases = _cases()
    times: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for argv in cases.values():
            _time(argv, env)  # warm-up: bytecode written
        for _ in range(args.runs):
            for name, argv in cases.items():
                times[name].append(_time(argv, env))
    finally:
        worker.stop()
        delete_keys(REDIS_URL, queue_key_patterns(prefix))

    median = {name: statistics.median(values) for name, values in times.items()}
    celery = median["import celery"]
    print(f"medians of {args.runs} runs, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(f"{'case':<22} {'median':>8} {'min':>7} {'max':>7} {'x import celery':>16}  target")
    limit = max(0.5, 2 * celery)
    targets = {
        "import agentexec": ("<= 0.5 s or <= 2x celery", median["import agentexec"] <= limit),
        "agentexec --help": ("<= 1 s", median["agentexec --help"] <= 1.0),
        "agentexec check": ("<= 2 s", median["agentexec check"] <= 2.0),
    }
    for name, values in times.items():
        target, met = targets.get(name, ("", None))
        verdict = "" if met is None else ("met" if met else "MISSED")
        print(
            f"{name:<22} {median[name]:>7.3f}s {min(values):>6.3f}s {max(values):>6.3f}s "
            f"{median[name] / celery:>15.1f}x  {target} {verdict}"
        )


if __name__ == "__main__":
    main()
