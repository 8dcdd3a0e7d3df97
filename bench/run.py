"""The one command: every measurement, repeated, as a markdown table of medians (min to max).

    uv run python -m bench.run [--quick] [--only capacity,throughput] [--runs 3]

Each run of each system is a subprocess of its own (fresh interpreter, fresh workers, unique
queues, activity tables reset), and the systems are interleaved within each repetition, so
a noisy neighbour hits all of them alike. The table goes to stdout and to
bench/results/latest.md, the raw figures to bench/results/latest.json, and each subprocess's
stderr to bench/results/logs/.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.common import (
    BENCH_KEY_PATTERNS,
    DASH,
    POSTGRES_URL,
    REDIS_URL,
    REPO_ROOT,
    RESULTS_DIR,
    UPSTREAM_PYTHON,
    UPSTREAM_REDIS_URL,
    Case,
    Results,
    Row,
    base_env,
    delete_keys,
    ensure_database,
    kill_group,
)

SCENARIOS = ("capacity", "throughput", "overhead", "enqueue", "reads", "status")
UPSTREAM_KEY_PATTERNS = ("agentexec_tasks*", "agentexec:*")
LOG_DIR = RESULTS_DIR / "logs"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes


def reap(pidfile: Path) -> None:
    """SIGKILL the process group of every worker a case started and left behind."""
    if not pidfile.exists():
        return
    for line in pidfile.read_text().split():
        pid = int(line)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"celery" in cmdline:
            log(f"  reaping worker {pid} left behind")
            kill_group(pid)
    pidfile.unlink()


def run_case(case: Case, tag: str) -> dict[str, Any]:
    """Run one case's subprocess; its JSON line, or {"error": ...}."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    stderr_path = LOG_DIR / f"{tag}.log"
    pidfile = LOG_DIR / f"{tag}.pids"
    env = base_env(BENCH_PIDFILE=str(pidfile), PYTHONDONTWRITEBYTECODE="1", **case.env)
    started = time.perf_counter()
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            case.argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, _ = proc.communicate(timeout=case.timeout)
        except BaseException as exc:
            # SIGTERM first: the case stops its own workers on the way out.
            with suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                stdout, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                kill_group(proc.pid)
                stdout, _ = proc.communicate()
            if not isinstance(exc, subprocess.TimeoutExpired):
                raise
            stdout = stdout or ""
            stdout += "\n" + json.dumps({"error": f"timeout after {case.timeout:.0f}s"})
        finally:
            kill_group(proc.pid)
            reap(pidfile)
    elapsed = time.perf_counter() - started
    result: dict[str, Any] = {}
    for line in reversed((stdout or "").strip().splitlines()):
        with suppress(json.JSONDecodeError):
            result = json.loads(line)
            break
    if not result or proc.returncode not in (0, None):
        lines = stderr_path.read_text(errors="replace").strip().splitlines()
        tail = " | ".join(lines[-3:])[-600:]
        result.setdefault("error", f"exit code {proc.returncode}: {tail} (see {stderr_path})")
    result["case_s"] = round(elapsed, 1)
    return result


# --------------------------------------------------------------------------- environment


def machine() -> dict[str, str]:
    model = "unknown"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f"{kb / 2**20:.1f} GiB"
    from importlib.metadata import version

    return {
        "cpus": str(os.cpu_count()),
        "cpu model": model,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "celery": version("celery"),
        "openai-agents": version("openai-agents"),
        "sqlalchemy": version("sqlalchemy"),
        "load average at start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


def check_services() -> None:
    """Redis answers, and the PostgreSQL database `bench` exists (created if not)."""
    import redis

    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    ensure_database(POSTGRES_URL)


def setup_upstream() -> str | None:
    """Install upstream agentexec 0.3.0 into bench/.venv-upstream; None, or why it failed."""
    script = REPO_ROOT / "bench" / "upstream" / "setup.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not UPSTREAM_PYTHON.exists():
        return f"bench/upstream/setup.sh failed: {proc.stderr[-500:]}"
    return None


def sweep_redis() -> None:
    with suppress(Exception):
        delete_keys(REDIS_URL, patterns=BENCH_KEY_PATTERNS)
    with suppress(Exception):
        delete_keys(UPSTREAM_REDIS_URL, patterns=UPSTREAM_KEY_PATTERNS)


# --------------------------------------------------------------------------- report


def render(rows: list[Row]) -> str:
    lines = [
        f"| figure | system | median (min{DASH}max) | vs bare Celery | vs upstream 0.3.0 "
        "| target |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.figure} | {r.system} | {r.value} | {r.vs_bare} | {r.vs_upstream} | {r.target} |"
        )
    return "\n".join(lines)


def report(
    modules: dict[str, ModuleType],
    results: Results,
    size: str,
    runs: int,
    upstream_runs: int,
    wall: float,
    info: dict[str, str],
    failures: list[str],
) -> str:
    rows: list[Row] = []
    for module in modules.values():
        rows.extend(r for r in module.rows(results, size) if r.key is None or r.key in results)
    head = [
        f"# agentexec benchmark ({'quick smoke check' if size == 'quick' else 'full'})",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {runs} run(s) of each figure "
        f"({upstream_runs} of those that start upstream's worker pool), "
        f"total wall time {wall / 60:.1f} min. Ratios are of the medians "
        "(agentexec ÷ the other system); T/F pairs the runs of one repetition.",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + ".",
        "",
        render(rows),
    ]
    if failures:
        head += ["", "Failed runs:", *(f"- {f}" for f in failures)]
    return "\n".join(head) + "\n"


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run: a smoke check")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {SCENARIOS}")
    parser.add_argument("--runs", type=int, default=None, help="repetitions (default 3; quick 1)")
    parser.add_argument(
        "--upstream-runs",
        type=int,
        default=1,
        help="repetitions of the upstream cases that start its worker pool (throughput, no-op); "
        "each costs 20-40 s of pool start-up on 2 cores (default 1, at most --runs)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "latest.md")
    args = parser.parse_args()
    size = "quick" if args.quick else "full"
    runs = args.runs or (1 if args.quick else 3)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {SCENARIOS}")
    modules = {n: importlib.import_module(f"bench.{n}") for n in SCENARIOS if n in names}

    started = time.perf_counter()
    info = machine()
    log("machine: " + "; ".join(f"{k} {v}" for k, v in info.items()))
    check_services()
    cases = {name: module.cases(size) for name, module in modules.items()}
    upstream_error = None
    if any(c.argv[0] == str(UPSTREAM_PYTHON) for cs in cases.values() for c in cs):
        log("setting up upstream agentexec 0.3.0 (bench/upstream/setup.sh)")
        upstream_error = setup_upstream()
        if upstream_error:
            log(upstream_error)

    results: Results = {}
    failures: list[str] = []

    def record(case: Case, tag: str) -> dict[str, Any]:
        if upstream_error and case.argv[0] == str(UPSTREAM_PYTHON):
            result: dict[str, Any] = {"error": upstream_error}
        else:
            result = run_case(case, tag)
        shown = {k: v for k, v in result.items() if not isinstance(v, dict | list)}
        log(f"  {case.key}: {json.dumps(shown)[:400]}")
        if "error" in result:
            failures.append(f"{tag}: {str(result['error'])[:300]}")
        return result

    try:
        for name, module in modules.items():
            if hasattr(module, "setup_case"):
                log(f"[setup] {name}")
                setup = record(module.setup_case(size), f"setup-{name}")
                results.setdefault(f"{name}.setup", []).append(setup)
        for rep in range(1, runs + 1):
            for name in modules:
                log(f"[run {rep}/{runs}] {name} ({(time.perf_counter() - started) / 60:.1f} min)")
                for case in cases[name]:
                    if case.upstream_pool and rep > args.upstream_runs:
                        continue
                    result = record(case, f"{rep}-{case.key}")
                    results.setdefault(case.key, []).append(result)
    finally:
        for name, module in modules.items():
            if hasattr(module, "teardown_case"):
                record(module.teardown_case(), f"teardown-{name}")
        sweep_redis()

    wall = time.perf_counter() - started
    upstream_runs = min(runs, args.upstream_runs)
    text = report(modules, results, size, runs, upstream_runs, wall, info, failures)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(
        json.dumps({"size": size, "runs": runs, "machine": info, "results": results}, indent=1)
    )
    print(text)
    log(f"wrote {args.out} ({wall / 60:.1f} min)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
