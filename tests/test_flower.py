"""`agentexec flower` shows agent tasks, queued ones too, by their agent id; every page,
`/metrics` included, asks for its credentials."""

from __future__ import annotations

import functools
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import userapp.worker  # noqa: F401

import agentexec as ax
from agentexec.testing import WorkerProcess, wait_for
from agentexec.testing.plugin import StartWorker
from tests.apps import APP_DIR, APP_ENV

CREDENTIALS = ("admin", "a-long-flower-password")


@pytest.fixture
def flower(agentexec_env: dict[str, str], tmp_path: Path) -> Any:
    import os

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [sys.executable, "-m", "agentexec", "flower", f"--port={port}", "--address=127.0.0.1"]
    env = {**os.environ, **agentexec_env, "FLOWER_BASIC_AUTH": ":".join(CREDENTIALS)}
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{base}/api/tasks", auth=CREDENTIALS, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    process = WorkerProcess(argv, env, APP_DIR, tmp_path / "flower.log").start(ready=answers)
    yield base
    process.stop(10)


def _task(base: str, agent_id: uuid.UUID) -> dict[str, Any]:
    tasks: dict[str, Any] = httpx.get(f"{base}/api/tasks", auth=CREDENTIALS, timeout=5).json()
    return tasks.get(str(agent_id), {})


def test_every_page_asks_for_the_credentials_metrics_included(flower: str) -> None:
    for path in ("/", "/api/tasks", "/api/workers", "/metrics"):
        assert httpx.get(f"{flower}{path}", timeout=5).status_code == 401, path
        wrong = httpx.get(f"{flower}{path}", auth=("admin", "wrong"), timeout=5)
        assert wrong.status_code == 401, path
    metrics = httpx.get(f"{flower}/metrics", auth=CREDENTIALS, timeout=5)
    assert metrics.status_code == 200 and "flower_events_total" in metrics.text


def test_flower_refuses_to_start_without_auth(tmp_path: Path) -> None:
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    argv = [sys.executable, "-m", "agentexec", "flower", "--port=1"]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "FLOWER_BASIC_AUTH" in out.stderr
    env["FLOWER_BASIC_AUTH"], env["FLOWER_UNAUTHENTICATED_API"] = "a:b", "true"
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "FLOWER_UNAUTHENTICATED_API" in out.stderr


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


async def test_flower_shows_agent_progress(
    flower: str, agentexec_worker: StartWorker, sqlite_only: None
) -> None:
    """Each status report reaches Flower as a `task-progress` event: state PROGRESS, and the
    latest percentage and message as the task's result, while the agent runs."""
    agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=APP_ENV)
    # Flower's event receiver may start after the first events: a long run reports often.
    queued = await ax.enqueue("paced_agent", {"seconds": 40, "reports": 40})

    def progress() -> dict[str, Any] | None:
        url = f"{flower}/api/task/info/{queued.agent_id}"
        task = httpx.get(url, auth=CREDENTIALS, timeout=5)
        if task.status_code != 200:
            return None
        info: dict[str, Any] = task.json()
        return info if info.get("state") == "PROGRESS" else None

    first = wait_for(progress, 60, "a task-progress event in Flower")

    def newer() -> dict[str, Any] | None:
        info = progress()
        if info and info["result"]["percentage"] > first["result"]["percentage"]:
            return info
        return None

    later = wait_for(newer, 30, "a newer report in Flower")
    for info in (first, later):
        result = info["result"]
        step = int(result["message"].removeprefix("step "))
        assert result == {"percentage": round(100 * step / 40), "message": f"step {step}"}
        assert info["name"] == "paced_agent"
        assert info["worker"].startswith("test-")
    await ax.cancel(queued.agent_id)
