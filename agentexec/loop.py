"""One long-lived asyncio event loop per worker process, on a thread of its own.

Celery task bodies are synchronous. Each agent task submits its coroutine here and parks its
pool thread until the coroutine finishes, so one process holds many agents in flight on one
loop, sharing the SDK's HTTP connection pool. A loop per task (`asyncio.run`) would break
every client bound to a loop with "Event loop is closed".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class EventLoopThread:
    """A loop on a daemon thread, started on first use. The runtime owns one per process."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._running: dict[str, concurrent.futures.Future[Any]] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, started if this process has none yet."""
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                self._start()
            assert self._loop is not None
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T], *, key: str | None = None) -> T:
        """Run `coro` on the loop and block the calling thread until it finishes.

        Args:
            coro: the coroutine; it must not be awaited elsewhere.
            key: a name `cancel(key)` can use, such as the agent id.

        Raises:
            concurrent.futures.CancelledError: `cancel(key)` was called.
        """
        loop = self.loop
        with self._lock:
            # Registered under the lock, so a cancel that races with the start still finds it.
            future = asyncio.run_coroutine_threadsafe(coro, loop)
            if key is not None:
                self._running[key] = future
        try:
            return future.result()
        finally:
            if key is not None:
                self._running.pop(key, None)

    def cancel(self, key: str) -> bool:
        """Cancel the coroutine running under `key`. False when nothing runs under it."""
        with self._lock:
            future = self._running.get(key)
        return future.cancel() if future is not None else False

    def is_running(self, key: str) -> bool:
        """Whether a coroutine runs under `key` in this process."""
        with self._lock:
            return key in self._running

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel what still runs, let it unwind, stop the loop and join its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            drained = asyncio.run_coroutine_threadsafe(_cancel_all(), loop)
            with contextlib.suppress(Exception):
                drained.result(timeout)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._running = {}
        self._thread = threading.Thread(target=serve, name="agentexec-event-loop", daemon=True)
        self._thread.start()
        ready.wait()
        self._loop = loop


async def _cancel_all() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
