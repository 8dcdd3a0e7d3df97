"""Group commit: every caller gets its own result, concurrent callers share batches."""

from __future__ import annotations

import threading

import pytest

from agentexec.grouping import GroupCommit
from agentexec.testing import wait_for


def test_concurrent_callers_share_batches_and_get_their_own_results() -> None:
    batches: list[int] = []
    release = threading.Event()

    def write(items: list[int]) -> list[int]:
        batches.append(len(items))
        release.wait(5)  # the first batch waits until everyone has queued behind it
        return [2 * i for i in items]

    group = GroupCommit(write)
    results: dict[int, int] = {}
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, group(i))) for i in range(16)
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(group._waiting) == 15, 10, "15 callers queued behind the first")
    release.set()
    for thread in threads:
        thread.join(10)
    assert results == {i: 2 * i for i in range(16)}
    assert batches[0] == 1 and sum(batches) == 16 and len(batches) == 2  # 1, then the other 15


def test_an_error_reaches_every_caller_of_its_batch_only() -> None:
    def write(items: list[int]) -> list[int]:
        if -1 in items:
            raise ValueError("refused")
        return items

    group = GroupCommit(write)
    with pytest.raises(ValueError, match="refused"):
        group(-1)
    assert group(3) == 3
