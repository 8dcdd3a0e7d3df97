"""`celery -A agentexec flower` shows agent tasks: queued ones too, by their agent id."""

from __future__ import annotations

import functools
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

import agentexec as ax
from agentexec.testing import WorkerProcess, wait_for
from agentexec.testing.plugin import StartWorker

APP_DIR = Path(__file__).parent / "apps" / "plainapp"
sys.path.insert(0, str(APP_DIR))
import userapp.worker  # noqa: E402, F401

APP_ENV = {"PYTHONPATH": str(APP_DIR)}


@pytest.fixture
def flower(agentexec_env: dict[str, str], tmp_path: Path) -> Any:
    import os

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [sys.executable, "-m", "celery", "-A", "agentexec", "flower", f"--port={port}",
            "--address=127.0.0.1"]  # fmt: skip
    env = {**os.environ, **agentexec_env, "FLOWER_UNAUTHENTICATED_API": "true"}
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{base}/api/tasks", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    process = WorkerProcess(argv, env, APP_DIR, tmp_path / "flower.log").start(ready=answers)
    yield base
    process.stop(10)


def _task(base: str, agent_id: uuid.UUID) -> dict[str, Any]:
    tasks: dict[str, Any] = httpx.get(f"{base}/api/tasks", timeout=5).json()
    return tasks.get(str(agent_id), {})


async def test_flower_lists_agent_tasks(
    flower: str, agentexec_worker: StartWorker, sqlite_only: None
) -> None:
    # Flower answers HTTP before its event receiver listens, and events are pub/sub: send
    # until one is seen.
    def pending(agent_id: uuid.UUID) -> bool:
        return _task(flower, agent_id).get("state") == "PENDING"

    for _ in range(30):
        queued = await ax.enqueue("sleep_agent", {"label": "seen-in-flower"})
        try:
            wait_for(functools.partial(pending, queued.agent_id), 2, "the task-sent event")
            break
        except TimeoutError:
            continue
    assert _task(flower, queued.agent_id)["name"] == "sleep_agent"
    agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=APP_ENV)
    await ax.get_result(queued.agent_id, timeout=60)
    wait_for(lambda: _task(flower, queued.agent_id).get("state") == "SUCCESS", 30, "success")
    task = _task(flower, queued.agent_id)
    assert "seen-in-flower" in task["result"]
    assert task["worker"].startswith("test-")
