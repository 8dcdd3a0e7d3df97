"""The heartbeat lists the requests a worker holds while the pool's threads change them."""

from __future__ import annotations

import sys
import threading
import weakref

from agentexec.worker.heartbeat import _snapshot


class _Request:
    pass


def test_held_requests_are_listed_while_other_threads_add_and_remove_them() -> None:
    # Celery keeps them in WeakSets, which its pool threads change as deliveries start and
    # end; iterating a WeakSet there failed with "Set changed size during iteration" and
    # killed the heartbeat thread, so every run was delivered again after the visibility
    # timeout.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    requests: weakref.WeakSet[_Request] = weakref.WeakSet()
    kept = [_Request() for _ in range(2000)]
    for request in kept:
        requests.add(request)
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            extra = [_Request() for _ in range(50)]
            for request in extra:
                requests.add(request)
            for request in extra:
                requests.discard(request)

    threads = [threading.Thread(target=churn) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(300):
            listed = _snapshot(requests)
            assert set(map(id, kept)) <= set(map(id, listed))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        sys.setswitchinterval(previous)
