"""A replay of a long history streams it page by page: the API process's memory does not
grow with the history (a 100,000-event replay, in an API process of its own)."""

from __future__ import annotations

import os
import socket
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import httpx
import pytest

from agentexec.eventlog.event import Event
from agentexec.processes import WorkerProcess
from agentexec.runtime import get_runtime
from agentexec.states import EventKind, Status
from tests.web.conftest import AUTH, TOKEN

#: The database plays no part here: SQLite alone keeps the suite short.
pytestmark = pytest.mark.usefixtures("sqlite_only")

EVENTS = 100_000
RUNS = 100


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _append_history() -> None:
    """`EVENTS` status reports of `RUNS` runs, appended to the log in pipelines."""
    runs = [uuid.uuid4() for _ in range(RUNS)]
    log = get_runtime().events
    batch: list[Event] = []
    for i in range(EVENTS):
        agent_id = runs[i % RUNS]
        kind = EventKind.QUEUED if i < RUNS else EventKind.REPORT
        status = Status.QUEUED if i < RUNS else Status.RUNNING
        batch.append(
            Event(agent_id, status, f"step {i} " + "x" * 100, i % 100, kind=kind, task="t")
        )
        if len(batch) == 5_000:
            log.append(batch)
            batch = []


@pytest.mark.timeout(300)
def test_a_100k_event_replay_keeps_the_api_process_small(
    agentexec_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "replayapp.py").write_text(
        textwrap.dedent(
            f"""
            from fastapi import FastAPI, Header, HTTPException
            import agentexec.web

            def token(authorization: str | None = Header(None)) -> None:
                if authorization != "Bearer {TOKEN}":
                    raise HTTPException(401, "no")

            app = FastAPI()
            app.include_router(agentexec.web.create_router(auth=token), prefix="/agentexec")
            """
        )
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}/agentexec"

    def answers() -> bool:
        try:
            return httpx.get(f"{base}/agents", headers=AUTH, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    argv = [sys.executable, "-m", "uvicorn", "replayapp:app", "--port", str(port)]
    env = {**os.environ, **agentexec_env, "AGENTEXEC_GC_FREEZE": "false"}
    api = WorkerProcess(argv, env, tmp_path, tmp_path / "api.log").start(ready=answers)
    try:
        _append_history()
        # Warm: one small stream first, so the baseline includes what any stream allocates.
        with httpx.stream("GET", f"{base}/agents/events", headers=AUTH, timeout=30) as warm:
            lines = warm.iter_lines()
            next(lines)
        before = _rss_mb(api.pid)
        peak = before
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.wait(0.05):
                peak = max(peak, _rss_mb(api.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        received = 0
        try:
            url = f"{base}/agents/events"
            with httpx.stream("GET", url, params={"after": 1}, headers=AUTH, timeout=60) as replay:
                assert replay.status_code == 200
                for line in replay.iter_lines():
                    if line.startswith("data: "):
                        received += 1
                        if received == EVENTS - 1:  # everything after position 1
                            break
        finally:
            stop.set()
            sampler.join(5)
        growth = peak - before
        print(f"\n100k-event replay: API RSS {before:.0f} MB -> peak {peak:.0f} MB (+{growth:.1f})")
        assert received == EVENTS - 1
        assert growth < 50, f"the API process grew by {growth:.0f} MB during the replay"
    finally:
        api.stop(10)
