"""Shared pieces of the benchmark: the scripted agent, worker processes, /proc sampling, stats.

Nothing here imports agentexec at module level: the bare Celery app imports this module, and
its no-op path must not load agentexec (whose signal receivers would then run for every task).
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents import Agent, FunctionTool

    from agentexec.processes import WorkerProcess

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
#: Redis db of the benchmark (never 15, the tests' db). Upstream's driver uses db 9.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
POSTGRES_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/bench"
)
UPSTREAM_POSTGRES_URL = os.environ.get(
    "BENCH_UPSTREAM_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/bench_upstream"
)
UPSTREAM_REDIS_URL = os.environ.get("BENCH_UPSTREAM_REDIS_URL", "redis://127.0.0.1:6379/9")
#: Key patterns the benchmark may leave in its Redis db; swept at the end of a run.
BENCH_KEY_PATTERNS = ("bench-*", "_kombu.binding*", "celery-task-meta-*", "unacked*")

# --------------------------------------------------------------------------- the agent

INSTRUCTIONS = "Benchmark agent. Report your status, then answer."


def scripted_agent(tool: FunctionTool, latency: float, idx: int) -> Agent[Any]:
    """The agent every system runs: turn 1 calls `report_status`, turn 2 answers.

    Each model turn sleeps `latency` seconds, like a real model (agentexec.runners.offline).
    """
    from agents import Agent

    from agentexec.runners.offline import answer, report, scripted_model

    model = scripted_model(
        report(f"Working on task {idx}", 50), answer(f"done {idx}"), latency=latency
    )
    return Agent(name="bench-agent", instructions=INSTRUCTIONS, tools=[tool], model=model)


_noop_tool: FunctionTool | None = None


def noop_report_status_tool() -> FunctionTool:
    """A `report_status` tool that records nothing, for the systems without tracking.

    Defined once per process, as a plain SDK user would define a module-level tool.
    """
    global _noop_tool
    if _noop_tool is None:
        from agents import function_tool

        @function_tool(name_override="report_status")
        def report_status(message: str, percentage: int) -> str:
            """Tell the user what you are doing now and how far along the whole task is.

            Args:
                message: one short user-facing sentence about the current step.
                percentage: estimated overall progress, a whole number from 0 to 100.
            """
            return "Status recorded."

        _noop_tool = report_status
    return _noop_tool


async def run_plain_agent(idx: int, latency: float) -> str:
    """The scripted agent through the SDK's `Runner.run`, without agentexec."""
    from agents import Runner

    agent = scripted_agent(noop_report_status_tool(), latency, idx)
    result = await Runner.run(agent, input=f"task {idx}", max_turns=5)
    return str(result.final_output)


def disable_tracing() -> None:
    """No OpenAI key, nowhere to send traces."""
    os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
    from agents import set_tracing_disabled

    set_tracing_disabled(True)


# --------------------------------------------------------------------------- stats

TIMES = "\u00d7"  # multiplication sign
DASH = "\u2013"  # en dash, between min and max


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (the same definition as upstream's driver)."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[k]


@dataclass(frozen=True)
class Summary:
    """Median, min and max of one figure over the runs."""

    median: float
    lo: float
    hi: float
    n: int

    def fmt(self, digits: int = 2, unit: str = "") -> str:
        if self.n == 1:
            return f"{self.median:.{digits}f}{unit}"
        return f"{self.median:.{digits}f}{unit} ({self.lo:.{digits}f}{DASH}{self.hi:.{digits}f})"


def summarize(values: Iterable[float]) -> Summary | None:
    """The Summary of `values`, or None when there are none."""
    vals = [float(v) for v in values]
    if not vals:
        return None
    return Summary(statistics.median(vals), min(vals), max(vals), len(vals))


# --------------------------------------------------------------------------- /proc


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    # The command name may contain spaces; fields resume after the closing parenthesis.
    return text[text.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants, from the parent ids in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")


def rss_bytes(pids: Iterable[int]) -> int:
    """Resident set size of `pids`, summed."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


def cpu_seconds(pids: Iterable[int]) -> float:
    """User plus system CPU time of `pids`, summed."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


class TreeSampler:
    """Samples the RSS of process trees on a thread and keeps the peak of their sum.

    The trees are re-read from /proc every `rescan` samples, so prefork children count too.
    """

    def __init__(self, roots: Sequence[int], interval: float = 0.1, rescan: int = 10) -> None:
        self.roots = list(roots)
        self.interval = interval
        self.rescan = rescan
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def pids(self) -> list[int]:
        return [pid for root in self.roots for pid in process_tree(root)]

    def _run(self) -> None:
        pids: list[int] = []
        i = 0
        while not self._stop.is_set():
            if i % self.rescan == 0:
                pids = self.pids()
            self.peak = max(self.peak, rss_bytes(pids))
            i += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, rss_bytes(self.pids()))

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent not idle since boot, all cores (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICK


def client_cpu_seconds() -> float:
    """CPU time of this process so far (the measurement client's share of the machine)."""
    return time.process_time()


# --------------------------------------------------------------------------- workers


def worker_argv(app: str, *extra: str, name: str = "bench") -> list[str]:
    """`celery -A app worker` for this interpreter, with a unique node name."""
    from agentexec.processes import celery_worker_argv

    return celery_worker_argv(*extra, app=app, name=name)


def _record_pid(pid: int) -> None:
    """Append a worker's pid to `BENCH_PIDFILE`, so `bench.run` can reap it if we die."""
    path = os.environ.get("BENCH_PIDFILE")
    if path:
        with open(path, "a") as f:
            f.write(f"{pid}\n")


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by `pid`, if it still exists."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


@contextmanager
def running_workers(
    argvs: Sequence[Sequence[str]],
    env: Mapping[str, str],
    log_dir: Path,
    ready_timeout: float = 90.0,
    meanwhile: Callable[[], object] | None = None,
) -> Iterator[list[WorkerProcess]]:
    """Start one worker per argv (in parallel), wait until all are ready, always stop them.

    `meanwhile` runs in this thread while the workers boot (the client's own imports, say).
    Each worker is a process group of its own (`WorkerProcess`); on the way out it gets a
    warm shutdown (SIGTERM), and then its whole group is SIGKILLed regardless.
    """
    from agentexec.processes import WorkerProcess

    workers = [
        WorkerProcess(argv, env, REPO_ROOT, log_dir / f"worker-{i}.log")
        for i, argv in enumerate(argvs)
    ]
    started: list[WorkerProcess] = []

    def start(worker: WorkerProcess) -> None:
        try:
            worker.start(ready_timeout)
        finally:
            if worker.process is not None:
                started.append(worker)
                _record_pid(worker.pid)

    def stop(worker: WorkerProcess) -> None:
        with suppress(Exception):
            worker.stop(timeout=20)
        kill_group(worker.pid)

    try:
        with ThreadPoolExecutor(len(workers)) as pool:
            futures = [pool.submit(start, w) for w in workers]
            if meanwhile is not None:
                meanwhile()
            for future in futures:
                future.result()
        yield workers
    finally:
        with ThreadPoolExecutor(max(1, len(started))) as pool:
            list(pool.map(stop, list(started)))


def install_sigterm_exit() -> None:
    """Turn SIGTERM into SystemExit, so `finally` blocks stop the workers."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def hard_timeout(seconds: float) -> None:
    """Raise SystemExit after `seconds` (SIGALRM), as a backstop for a stuck run."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(f"hard timeout after {seconds:.0f}s")

    signal.signal(signal.SIGALRM, handler)
    signal.alarm(max(1, int(seconds)))


# --------------------------------------------------------------------------- Redis


def delete_keys(url: str, patterns: Iterable[str] = (), keys: Iterable[str] = ()) -> int:
    """Delete `keys` and every key matching `patterns` in the Redis db of `url`."""
    import redis

    client = redis.Redis.from_url(url)
    deleted = 0
    try:
        batch = list(keys)
        for pattern in patterns:
            batch.extend(k.decode() for k in client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(batch), 1000):
            deleted += int(client.delete(*batch[i : i + 1000]))  # type: ignore[arg-type]
    finally:
        client.close()
    return deleted


def queue_key_patterns(prefix: str) -> list[str]:
    """The queue lists and kombu bindings of queues named `<prefix>...`."""
    return [f"{prefix}*", f"_kombu.binding*{prefix}*"]


# --------------------------------------------------------------------------- SQL


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database of `url` when it does not exist yet."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    parsed = make_url(url)
    if not parsed.get_backend_name().startswith("postgresql"):
        return
    try:
        create_engine(parsed).connect().close()
    except OperationalError:
        admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
        admin.dispose()
        print(f"created PostgreSQL database {parsed.database}", file=sys.stderr, flush=True)


def reset_activity_tables(url: str) -> None:
    """Drop and create agentexec's activity tables at `url` (its database too, if missing)."""
    from sqlalchemy import create_engine

    from agentexec.db.models import Base

    ensure_database(url)
    engine = create_engine(url)
    try:
        Base.metadata.drop_all(engine)
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- cases

UPSTREAM_PYTHON = REPO_ROOT / "bench" / ".venv-upstream" / "bin" / "python"
UPSTREAM_DRIVER = REPO_ROOT / "bench" / "upstream" / "run_upstream.py"


@dataclass
class Case:
    """One system of one measurement: a subprocess that prints one JSON line."""

    key: str
    argv: list[str]
    timeout: float
    env: dict[str, str] = field(default_factory=dict)
    #: Starts upstream's worker pool: repeated only `--upstream-runs` times (see bench.run).
    upstream_pool: bool = False


def upstream_case(
    key: str,
    mode: str,
    n: int,
    *,
    workers: int | None = None,
    latency: float | None = None,
    extra: Sequence[str] = (),
    timeout: float = 300.0,
) -> Case:
    """A run of the colleague's upstream driver, on PostgreSQL and its own Redis db."""
    argv = [str(UPSTREAM_PYTHON), str(UPSTREAM_DRIVER), "--mode", mode, "--n", str(n)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    if latency is not None:
        argv += ["--latency", str(latency)]
    argv += ["--database-url", UPSTREAM_POSTGRES_URL, "--redis-url", UPSTREAM_REDIS_URL]
    argv += ["--timeout", str(int(timeout - 60)), *extra]
    return Case(key, argv, timeout, upstream_pool=mode != "enqueue")


def python_module(module: str, *args: object) -> list[str]:
    """`python -m module args...` with this interpreter."""
    return [sys.executable, "-m", module, *(str(a) for a in args)]


def emit(result: Mapping[str, Any]) -> None:
    """Print the one JSON line a case's subprocess reports."""
    print(json.dumps(result, default=str), flush=True)


def base_env(**extra: str) -> dict[str, str]:
    """The environment of a case: ours, tracing off, bytecode not written into bench/upstream."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(OPENAI_AGENTS_DISABLE_TRACING="1", PYTHONUNBUFFERED="1", **extra)
    return env


def unique(prefix: str) -> str:
    """`prefix-<8 hex>`: names of queues and hosts that never clash with another run."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- table rows

Results = dict[str, list[dict[str, Any]]]


@dataclass
class Row:
    """One line of the results table."""

    figure: str
    system: str
    value: str
    vs_bare: str = ""
    vs_upstream: str = ""
    target: str = ""
    #: The case the row reports; rows of cases that did not run are left out of the table.
    key: str | None = None


def by_run(results: Results, key: str, metric: str) -> list[float | None]:
    """`metric` of case `key` in each run, None where the run failed or lacks it."""
    out: list[float | None] = []
    for result in results.get(key, []):
        value = result.get(metric)
        ok = "error" not in result and isinstance(value, int | float)
        out.append(float(value) if ok else None)
    return out


def values(vals: Iterable[float | None]) -> list[float]:
    return [v for v in vals if v is not None]


def ratio_of_medians(a: Iterable[float | None], b: Iterable[float | None]) -> float | None:
    """median(a) / median(b), or None when either is missing."""
    sa, sb = summarize(values(a)), summarize(values(b))
    if sa is None or sb is None or sb.median == 0:
        return None
    return sa.median / sb.median


def fmt_ratio(a: Iterable[float | None], b: Iterable[float | None], digits: int = 2) -> str:
    """`1.23x` (with a multiplication sign), the ratio of the medians of a and b."""
    r = ratio_of_medians(a, b)
    return "—" if r is None else f"{r:.{digits}f}{TIMES}"


def paired_ratios(a: Sequence[float | None], b: Sequence[float | None]) -> Summary | None:
    """Summary of a[i] / b[i] over the runs where both were measured (same repetition)."""
    return summarize(x / y for x, y in zip(a, b, strict=False) if x is not None and y)


def verdict(
    value: float | None, *, at_most: float | None = None, at_least: float | None = None
) -> str:
    """` ✓` or ` ✗` against a target, empty when there is no value."""
    if value is None:
        return ""
    ok = (at_most is None or value <= at_most) and (at_least is None or value >= at_least)
    return " ✓" if ok else " ✗"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def answers(url: str) -> bool:
    """Whether `url` answers 200."""
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def scripted_model_server(latency: float) -> Iterator[str]:
    """The durable bench's scripted OpenAI server (`bench.durable --serve`) in a process of
    its own, so that it never waits on the client; yields its `/v1` base URL."""
    from agentexec.processes import WorkerProcess

    port = free_port()
    server = WorkerProcess(
        [sys.executable, "-m", "bench.durable", "--serve", str(port), "--latency", str(latency)],
        base_env(PYTHONPATH=str(REPO_ROOT)),
        REPO_ROOT,
        Path(tempfile.mkdtemp(prefix="bench-model-server-")) / "server.log",
    )
    base_url = f"http://127.0.0.1:{port}"
    server.start(60, lambda: answers(f"{base_url}/health"))
    try:
        yield f"{base_url}/v1"
    finally:
        server.stop(10)
