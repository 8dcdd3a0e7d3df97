"""`ax.gather`: results in input order, read together, and the first failure raised at once."""

from __future__ import annotations

import time
import uuid

import pytest
import userapp.worker  # noqa: F401  (registers the app's tasks here too)

import agentexec as ax
from agentexec.testing.plugin import StartWorker
from tests.apps import APP_DIR, APP_ENV

pytestmark = pytest.mark.usefixtures("sqlite_only")


async def test_results_come_in_input_order_finished_or_not(agentexec_worker: StartWorker) -> None:
    agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=APP_ENV)
    done = [await ax.enqueue("sleep_agent", {"label": f"done {i}"}) for i in range(20)]
    for run in done:
        await ax.get_result(run.agent_id)
    # Finished runs first in the input, still-running ones interleaved, ids as well as handles.
    slow = [await ax.enqueue("sleep_agent", {"seconds": 1.0, "label": f"slow {i}"})
            for i in range(3)]  # fmt: skip
    runs = [done[0], slow[2], done[1].agent_id, slow[0], str(done[2].agent_id), slow[1]]
    results = await ax.gather(*runs, timeout=30)
    labels = [r["label"] for r in results]
    assert labels == ["done 0", "slow 2", "done 1", "slow 0", "done 2", "slow 1"]
    assert await ax.gather() == []
    await ax.close_redis()


async def test_the_first_failure_is_raised_without_waiting_for_the_rest(
    agentexec_worker: StartWorker,
) -> None:
    agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=APP_ENV)
    slow = await ax.enqueue("sleep_agent", {"seconds": 20})
    failing = await ax.enqueue("sleep_agent", {"seconds": 0.5, "fail": "boom"})
    started = time.monotonic()
    with pytest.raises(ax.TaskFailedError, match="boom") as raised:
        await ax.gather(slow, failing, timeout=60)
    assert raised.value.agent_id == str(failing.agent_id)
    assert time.monotonic() - started < 15  # not after the slow run
    # A failure already stored is raised from the one read of every result.
    with pytest.raises(ax.TaskFailedError, match="boom"):
        await ax.gather(failing, slow, timeout=60)
    await ax.cancel(slow.agent_id)
    with pytest.raises(ax.TaskCanceledError):
        await ax.gather(slow, timeout=30)
    with pytest.raises(ax.UnknownAgentError):
        await ax.gather(uuid.uuid4(), timeout=30)
    with pytest.raises(TimeoutError):
        await ax.gather(await ax.enqueue("sleep_agent", {"seconds": 10}), timeout=0.5)
    with pytest.raises(ax.InvalidRequestError):
        await ax.gather(failing, timeout=0)
    await ax.close_redis()
