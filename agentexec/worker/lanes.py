"""The Celery pool agentexec workers use: an agent in flight is a greenlet, not a thread.

Celery runs a delivery (its signals, the task body, storing the result, acknowledging the
message) as one synchronous call. An agent task's body spends minutes waiting for its
coroutine on the worker's shared event loop, and on Celery's threads pool that wait parks a
thread per agent: thousands of threads, each with its stack, contending for the GIL.

Here each delivery runs in a greenlet on one of a few *lane* threads (`AGENTEXEC_LANES`).
When its body waits for its coroutine (`wait`), the greenlet hands its lane back, the lane
runs other deliveries meanwhile, and the coroutine's end resumes the greenlet on the same
lane. An agent in flight costs a coroutine and a suspended greenlet (a few kilobytes of saved
stack). The synchronous parts of a delivery, its Redis and SQL writes, still run on a lane,
so a lane is only busy while one of them does I/O.

Everything else is Celery's as before: the message is acknowledged when the delivery ends
(acks late), the consumer reserves no more messages than the pool's limit (the worker's
concurrency, `AGENTEXEC_NUM_WORKERS` agents in flight), and a warm shutdown waits for the
deliveries in flight. `revoke(terminate=True)` cancels the agent's coroutine (the worker's
`task_revoked` handler); the pool only accepts the terminate call.

Code on a lane must not block on something only another delivery of the same lane can
finish: it waits with `wait`, `sleep` and `acquire`, which yield the lane (and block as usual
on any other thread).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from celery.concurrency.base import BasePool, apply_target
from celery.utils.threads import LocalStack, _LocalStack
from greenlet import getcurrent, greenlet

from agentexec.config import get_settings

T = TypeVar("T")
logger = logging.getLogger(__name__)


class _Lane:
    """A thread running deliveries as greenlets: a new delivery, or one whose wait ended,
    arrives in its inbox and runs until it waits again or ends."""

    def __init__(self, index: int) -> None:
        self.inbox: queue.SimpleQueue[Callable[[], None] | greenlet | None] = queue.SimpleQueue()
        #: Deliveries on this lane, in flight or waiting to start.
        self.load = 0
        #: The deliveries started here and not ended (each suspended but the running one).
        self.started: set[greenlet] = set()
        self.hub: greenlet | None = None
        self.thread = threading.Thread(
            target=self._serve, name=f"agentexec-lane-{index}", daemon=True
        )

    def _serve(self) -> None:
        self.hub = getcurrent()
        while (item := self.inbox.get()) is not None:
            if isinstance(item, greenlet):
                item.switch()  # its wait ended
            else:
                delivery = greenlet(item)
                delivery.agentexec_lane = self
                self.started.add(delivery)
                delivery.switch()


def _lane_of(current: greenlet) -> _Lane | None:
    lane: _Lane | None = getattr(current, "agentexec_lane", None)
    return lane


def wait(future: concurrent.futures.Future[T]) -> T:
    """The result of `future`, yielding the lane while it is not done (blocking, off a lane)."""
    current = getcurrent()
    lane = _lane_of(current)
    if lane is not None and not future.done():
        assert lane.hub is not None
        future.add_done_callback(lambda _: lane.inbox.put(current))
        lane.hub.switch()
    return future.result()


def sleep(seconds: float) -> None:
    """Sleep, yielding the lane meanwhile (off a lane, `time.sleep`)."""
    if _lane_of(getcurrent()) is None:
        time.sleep(seconds)
        return
    wait(_timers.after(seconds))


class _Timers:
    """One thread that resolves futures at their deadlines (the lanes' sleeps)."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, concurrent.futures.Future[None]]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def after(self, seconds: float) -> concurrent.futures.Future[None]:
        """A future resolved `seconds` from now."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._changed:
            heapq.heappush(self._due, (time.monotonic() + seconds, next(self._order), future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="agentexec-lane-timers",
                                                daemon=True)  # fmt: skip
                self._thread.start()
            self._changed.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._changed.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _, _, future = heapq.heappop(self._due)
            future.set_result(None)


_timers = _Timers()


def _load_malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None on another C library."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_malloc_trim = _load_malloc_trim()


def acquire(lock: threading.Lock, poll: float = 0.05) -> None:
    """Acquire `lock`, yielding the lane while another holds it: its holder may be a
    delivery of the same lane."""
    if _lane_of(getcurrent()) is None:
        lock.acquire()
        return
    while not lock.acquire(blocking=False):
        sleep(poll)


class _Result:
    """What `on_apply` returns: the delivery's end, as Celery's threads pool gives it."""

    def __init__(self) -> None:
        self.f: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.get = self.f.result

    def wait(self, timeout: float | None = None) -> None:
        concurrent.futures.wait([self.f], timeout)

    def terminate(self, signum: int) -> None:
        """The worker cancels the agent's coroutine; the delivery then ends on its own."""


class AgentLanePool(BasePool):
    """Deliveries as greenlets on `AGENTEXEC_LANES` threads; at most `limit` in flight."""

    body_can_be_buffer = True
    signal_safe = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lanes = [_Lane(i) for i in range(max(1, min(self.limit, get_settings().lanes)))]
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._order = itertools.count()
        self._stopping = False
        self._trim_due = False
        if LocalStack is not _LocalStack:  # USE_FAST_LOCALS: one request per thread
            raise RuntimeError("the lanes pool needs Celery's greenlet-aware LocalStack; "
                               "unset USE_FAST_LOCALS or use AGENTEXEC_POOL=threads")  # fmt: skip

    def on_start(self) -> None:
        for lane in self._lanes:
            lane.thread.start()

    def on_stop(self) -> None:
        """Wait for the deliveries in flight (a warm shutdown), then stop the lanes.
        Deliveries still waiting for their lane are not started."""
        self._stopping = True
        with self._lock:
            self._idle.wait_for(lambda: not self._in_flight)
        self._stop_lanes()

    def on_terminate(self) -> None:
        self._stopping = True
        self._stop_lanes()

    def _stop_lanes(self) -> None:
        for lane in self._lanes:
            lane.inbox.put(None)
        for lane in self._lanes:
            if lane.thread.is_alive() and lane.thread is not threading.current_thread():
                lane.thread.join(5)

    def on_apply(  # type: ignore[override]  # (celery-types: *args, **kwargs)
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        callback: Callable[..., Any] | None = None,
        accept_callback: Callable[..., Any] | None = None,
        **_: Any,
    ) -> _Result:
        result = _Result()
        with self._lock:
            # The least loaded lane; ties go round, so that lanes share the start of a burst.
            start = next(self._order)
            count = len(self._lanes)
            lane = min((self._lanes[(start + i) % count] for i in range(count)),
                       key=lambda lane: lane.load)  # fmt: skip
            lane.load += 1
            self._in_flight += 1

        def deliver() -> None:
            try:  # the delivery's outcome goes to `callback`
                if self._stopping:
                    # Not started: its message stays unacknowledged, and goes back on its
                    # queue when the worker's connection closes (or its visibility lapses).
                    return
                apply_target(target, args, kwargs, callback, accept_callback)
            except BaseException as exc:  # the lane lives on; Celery logged it
                result.f.set_exception(exc)
            else:
                result.f.set_result(None)
            finally:
                lane.started.discard(getcurrent())
                with self._lock:
                    lane.load -= 1
                    self._in_flight -= 1
                    if not self._in_flight:
                        self._idle.notify_all()
                        self._trim_when_idle()

        lane.inbox.put(deliver)
        return result

    def _trim_when_idle(self) -> None:
        """Hand the allocator's free memory back to the system once the pool has been idle
        for a second (called under `_lock` when the last delivery ends).

        A burst of deliveries leaves each lane's malloc arena holding free pages up to the
        burst's peak; `malloc_trim` releases the free pages of every arena (glibc only)."""
        if _malloc_trim is None or self._trim_due:
            return
        self._trim_due = True

        def trim(_: object) -> None:
            with self._lock:
                self._trim_due = False
                if self._in_flight:
                    return  # the next idle moment trims
            _malloc_trim(0)

        _timers.after(1.0).add_done_callback(trim)

    def terminate_job(self, pid: int, signal: int | None = None) -> None:
        """Accept the terminate; see the module docstring."""

    def _get_info(self) -> dict[str, Any]:
        with self._lock:
            in_flight = self._in_flight
        # What the suspended deliveries keep of their lane's stack (the interpreter frames
        # live elsewhere): a few kilobytes each.
        saved = sum(
            getattr(g, "_stack_saved", 0) for lane in self._lanes for g in list(lane.started)
        )
        return {
            "implementation": f"{type(self).__module__}:{type(self).__name__}",
            "max-concurrency": self.limit,
            "lanes": len(self._lanes),
            "in-flight": in_flight,
            "saved-stack-bytes": saved,
        }
