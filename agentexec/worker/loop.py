"""One long-lived asyncio event loop per worker process, on a thread of its own.

Celery task bodies are synchronous. Each agent task submits its coroutine here and waits until
the coroutine finishes (on the `lanes` pool its greenlet yields its lane meanwhile; on the
`threads` pool it parks its thread), so one process holds many agents in flight on one loop,
sharing the SDK's HTTP connection pool. A loop per task (`asyncio.run`) would break
every client bound to a loop with "Event loop is closed".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sys
import threading
import time
import traceback
from collections.abc import Coroutine
from types import FrameType
from typing import Any, TypeVar

from agentexec.config import get_settings
from agentexec.worker import lanes

T = TypeVar("T")
logger = logging.getLogger(__name__)


class EventLoopThread:
    """A loop on a daemon thread, started on first use. The runtime owns one per process."""

    def __init__(self, block_warning: float | None = None) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running: dict[str, concurrent.futures.Future[Any]] = {}
        #: Keys whose coroutine has not ended (a delivery's tail may still be recording it).
        self._pending: set[str] = set()
        #: Seconds the loop may be blocked before the watchdog warns; 0 for no watchdog, None
        #: for `AGENTEXEC_LOOP_BLOCK_WARNING`.
        self.block_warning = block_warning

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

    def run(
        self, coro: Coroutine[Any, Any, T], *, key: str | None = None, label: str | None = None
    ) -> T:
        """Run `coro` on the loop and wait until it finishes (`lanes.wait`: a delivery on a
        lane yields it meanwhile; any other thread blocks).

        Args:
            coro: the coroutine; it must not be awaited elsewhere.
            key: a name `cancel(key)` can use, such as the agent id.
            label: what the watchdog calls this coroutine when it blocks the loop.

        Raises:
            concurrent.futures.CancelledError: `cancel(key)` was called.
        """
        loop = self.loop
        with self._lock:
            # Registered under the lock, so a cancel that races with the start still finds it.
            future = asyncio.run_coroutine_threadsafe(_labelled(coro, label or key), loop)
            if key is not None:
                self._running[key] = future
                self._pending.add(key)
        if key is not None:
            future.add_done_callback(lambda _: self._ended(key))
        try:
            return lanes.wait(future)
        finally:
            if key is not None:
                with self._lock:
                    self._running.pop(key, None)

    def _ended(self, key: str) -> None:
        with self._lock:
            self._pending.discard(key)
            if not self._pending:
                self._idle.notify_all()

    def running_keys(self) -> list[str]:
        """The keys of the coroutines running now."""
        with self._lock:
            return list(self._running)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every keyed coroutine has ended (their deliveries may still be recording
        the end: the pool waits for those); False when `timeout` passed first."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._pending, timeout)

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
        self._pending = set()
        self._thread = threading.Thread(target=serve, name="agentexec-event-loop", daemon=True)
        self._thread.start()
        ready.wait()
        self._loop = loop
        threshold = self.block_warning
        if threshold is None:
            threshold = get_settings().loop_block_warning
        if threshold > 0:
            watchdog = _Watchdog(loop, self._thread, threshold)
            name = "agentexec-loop-watchdog"
            threading.Thread(target=watchdog.run, name=name, daemon=True).start()


async def _labelled(coro: Coroutine[Any, Any, T], label: str | None) -> T:
    """Await `coro`; the watchdog finds `label` in this frame when the loop is blocked."""
    return await coro


class _Watchdog:
    """Warns when the loop does not answer for `threshold` seconds, naming the culprit."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread, threshold: float):
        self.loop = loop
        self.thread = thread
        self.threshold = threshold

    def run(self) -> None:
        while not self.loop.is_closed() and self.thread.is_alive():
            answered = threading.Event()
            started = time.monotonic()
            try:
                self.loop.call_soon_threadsafe(answered.set)
            except RuntimeError:  # the loop closed
                return
            if not answered.wait(self.threshold):
                self._warn(time.monotonic() - started)
                answered.wait()
                logger.warning("event loop answered again after %.1fs", time.monotonic() - started)
            time.sleep(min(0.25, self.threshold))

    def _warn(self, blocked: float) -> None:
        frame = sys._current_frames().get(self.thread.ident or 0)
        if frame is None:
            return
        culprit = _label_of(frame) or "no agent (loop code outside any agent)"
        stack = "".join(traceback.format_stack(frame)[-12:])
        logger.warning(
            "event loop blocked for %.1fs by %s; every agent in this process waits. Blocking "
            "call (use `await asyncio.to_thread(...)` or an async client):\n%s",
            blocked,
            culprit,
            stack,
        )


def _label_of(frame: FrameType | None) -> str | None:
    while frame is not None:
        if frame.f_code is _labelled.__code__:
            label = frame.f_locals.get("label")
            return str(label) if label else None
        frame = frame.f_back
    return None


async def _cancel_all() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
