"""Child processes (Celery workers, Flower): started, waited on until ready, always stopped.

The demo (`agentexec demo`) starts its worker and Flower with these helpers, the embedded
Redis waits with `wait_for`, and the test helpers re-export them for tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["WorkerProcess", "celery_worker_argv", "wait_for"]

READY_MARK = " ready."
#: Signals `interrupts_deferred` holds back.
_DEFERRED = (signal.SIGINT, signal.SIGTERM)


class WorkerProcess:
    """A worker (or Flower) subprocess whose output goes to a log file you can read.

    Args:
        argv: the command, such as `celery -A agentexec worker`.
        env: the whole environment of the process.
        cwd: where to start it.
        log_path: where its stdout and stderr go.
        die_with_parent: on Linux, have the kernel SIGTERM the process when this one dies,
            even by SIGKILL (the demo uses it; tests stop their workers themselves).
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
        *,
        die_with_parent: bool = False,
    ) -> None:
        self.argv = list(argv)
        self.die_with_parent = die_with_parent
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(
        self, ready_timeout: float = 60.0, ready: Callable[[], bool] | None = None
    ) -> WorkerProcess:
        """Start the process and wait until `ready()` (default: Celery says it is ready)."""
        with interrupts_deferred(), self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=terminate_with_parent if self.die_with_parent else None,
            )
        wait_for(
            ready or (lambda: READY_MARK in self.log()),
            ready_timeout,
            f"ready: {' '.join(self.argv)}",
            on_timeout=self.log,
            abort=lambda: self.process is not None and self.process.poll() is not None,
        )
        return self

    @property
    def pid(self) -> int:
        """The worker's process id."""
        assert self.process is not None, "not started"
        return self.process.pid

    def log(self) -> str:
        """Everything the worker has printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (a warm shutdown), then SIGKILL after `timeout`. Returns the exit code.

        Whatever the process left behind in its process group is killed too.
        """
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        code = process.returncode
        self.kill()
        return code

    def kill(self) -> int | None:
        """SIGKILL the whole process group, as a crash would."""
        process = self.process
        if process is None:
            return None
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return process.wait(10)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl+C (and SIGTERM) back until the block ends, then raise KeyboardInterrupt.

    Around starting a child: an interrupt that lands after the fork but before `Popen`
    returns would leave a running child that nothing holds a handle to, so nothing stops.
    Only in the main thread (signal handlers live there); elsewhere it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda s, f: held.append(s)) for sig in _DEFERRED}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if held:
        raise KeyboardInterrupt


def terminate_with_parent() -> None:
    """In a child, before exec: the kernel sends it SIGTERM when its parent dies (Linux).

    "Parent" is the thread that started it: start such children from the main thread.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def celery_worker_argv(*extra: str, app: str = "agentexec", name: str = "test") -> list[str]:
    """`celery -A <app> worker` with a unique node name, for this interpreter."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "--loglevel=INFO",
        f"--hostname={name}-{uuid.uuid4().hex[:8]}@%h",
        "--without-mingle",
        "--without-gossip",
        *extra,
    ]


def wait_for(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
    on_timeout: Callable[[], str] | None = None,
    abort: Callable[[], bool] | None = None,
) -> Any:
    """Poll `condition` until it returns something truthy, which is returned.

    Raises:
        TimeoutError: `timeout` seconds passed, or `abort()` became true, first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        stopped = abort is not None and abort()
        if stopped or time.monotonic() > deadline:
            detail = f"\n{on_timeout()[-4000:]}" if on_timeout else ""
            reason = "process exited" if stopped else f"not within {timeout}s"
            raise TimeoutError(f"waiting for {what}: {reason}{detail}")
        time.sleep(interval)
