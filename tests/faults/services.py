"""Private Redis and PostgreSQL servers for fault tests, each on a free port of its own.

Fault tests stop and restart servers. They must never touch the shared services on
127.0.0.1:6379 (Redis) and 127.0.0.1:5432 (PostgreSQL), so every test gets servers of its
own, in a temporary directory, on a port picked by the kernel.

Example:
    ```python
    with PrivateRedis() as server:
        client = redis.Redis.from_url(server.url)
        ...
        server.restart()  # the AOF keeps the data
    ```
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
import pytest
import redis
from psycopg import sql
from redis.backoff import NoBackoff
from redis.retry import Retry

# Ports of the shared services: a private server never gets one of them.
SHARED_PORTS = frozenset({6379, 5432})
START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
COMMAND_TIMEOUT = 60.0
POLL_INTERVAL = 0.02


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the kernel picks it).

    Returns:
        The port number, never one of the shared services' ports.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in SHARED_PORTS:
            return port


def redis_available() -> bool:
    """Whether `redis-server` and `redis-cli` are installed."""
    return all(shutil.which(name) for name in ("redis-server", "redis-cli"))


def postgres_bindir() -> Path | None:
    """The directory of `initdb` and `pg_ctl`, or None when PostgreSQL is not installed.

    Returns:
        The newest `/usr/lib/postgresql/<version>/bin`, else the directory of `initdb` on
        `PATH`, else None.
    """
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    versions = [p for p in found if p.parent.name.isdigit() and (p / "pg_ctl").exists()]
    if versions:
        return max(versions, key=lambda p: int(p.parent.name))
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def postgres_available() -> bool:
    """Whether PostgreSQL's server binaries and `su` are installed."""
    return postgres_bindir() is not None and shutil.which("su") is not None


def require_server(name: str, available: bool) -> None:
    """Skip the calling test when a server is not installed, but fail it in CI (`CI` set).

    Args:
        name: The server's name, for the message.
        available: Whether its binaries are installed.
    """
    if available:
        return
    message = f"{name} server binaries are not installed"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (nobody may reap a daemon here)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may hold spaces.
    return stat.rpartition(")")[2].split()[0] != "Z"


def _run(argv: list[str], what: str, log: Path | None = None) -> str:
    """Run a command to completion; raise RuntimeError with its output when it fails.

    Args:
        argv: The command.
        what: What the command does, for the error message.
        log: A server log whose tail goes into the error message.

    Returns:
        The command's standard output.

    Raises:
        RuntimeError: The command failed or timed out.
    """
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{what}: timed out after {exc.timeout}s") from exc
    if done.returncode != 0:
        message = f"{what} failed ({done.returncode}): {shlex.join(argv)}\n"
        message += f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        if log is not None:
            message += f"\nlog tail:\n{_tail(log)}"
        raise RuntimeError(message)
    return done.stdout


class _Server:
    """A private server as a context manager: started on entry, always closed on exit."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PrivateRedis(_Server):
    """A Redis server of one test, on a free port, with its files in a temporary directory.

    Args:
        appendonly: Keep an append-only file, so the data survives any restart.
    """

    def __init__(self, *, appendonly: bool = True) -> None:
        self.appendonly = appendonly
        self._port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="agentexec-redis-"))
        self._pid: int | None = None

    @property
    def port(self) -> int:
        """The server's port on 127.0.0.1."""
        return self._port

    @property
    def url(self) -> str:
        """The URL of the server's database 0."""
        return f"redis://127.0.0.1:{self._port}/0"

    @property
    def running(self) -> bool:
        """Whether the server was started and not stopped since."""
        return self._pid is not None

    @property
    def _log(self) -> Path:
        return self._dir / "redis.log"

    @property
    def _pidfile(self) -> Path:
        return self._dir / "redis.pid"

    def start(self) -> None:
        """Start the server and wait until it answers PING.

        Raises:
            RuntimeError: The server did not start in time.
        """
        if self.running:
            return
        argv = ["redis-server", "--port", str(self._port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "yes" if self.appendonly else "no"]
        argv += ["--dir", str(self._dir), "--daemonize", "yes"]
        argv += ["--pidfile", str(self._pidfile), "--logfile", str(self._log)]
        _run(argv, "redis-server", self._log)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ping():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Redis on port {self._port} did not answer in {START_TIMEOUT}s\n"
                    f"{_tail(self._log)}"
                )
            time.sleep(POLL_INTERVAL)
        self._pid = self._wait_for_pidfile()

    def stop(self, save: bool = True) -> None:
        """Shut the server down and wait until its process is gone.

        Args:
            save: Write an RDB snapshot on the way down (`SHUTDOWN SAVE`), else `NOSAVE`.
                With `appendonly`, the append-only file keeps the data either way.

        Raises:
            RuntimeError: The server refused to shut down or outlived the timeout.
        """
        if self._pid is None:
            return
        pid = self._pid
        mode = "save" if save else "nosave"
        out = _run(["redis-cli", "-p", str(self._port), "shutdown", mode], "redis-cli shutdown")
        if "ERR" in out:
            raise RuntimeError(f"Redis refused to shut down: {out}\n{_tail(self._log)}")
        deadline = time.monotonic() + STOP_TIMEOUT
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis (pid {pid}) still runs after {STOP_TIMEOUT}s")
            time.sleep(POLL_INTERVAL)
        self._pid = None

    def restart(self, save: bool = True) -> None:
        """Stop the server, then start it again on the same port and directory.

        Args:
            save: Passed to `stop`.
        """
        self.stop(save=save)
        self.start()

    def close(self) -> None:
        """Stop the server if it runs (killing it by pid if need be) and remove its files."""
        try:
            self.stop(save=False)
        except RuntimeError:
            if self._pid is not None and _pid_alive(self._pid):
                os.kill(self._pid, 9)
            self._pid = None
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _ping(self) -> bool:
        """Whether the server answers PING now."""
        client = redis.Redis(
            port=self._port,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _wait_for_pidfile(self) -> int:
        """The server's pid, read from its pid file once it is written."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                return int(self._pidfile.read_text().strip())
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Redis wrote no pid file at {self._pidfile}") from None
                time.sleep(POLL_INTERVAL)


class PrivatePostgres(_Server):
    """A PostgreSQL cluster of one test, on a free port, in a temporary directory.

    The server runs as the `postgres` user (`su postgres -c ...`), since this process is
    root. It accepts anyone as `postgres` without a password (trust), and skips fsync:
    data survives a stop and restart of the server, not a crash of the machine.

    Args:
        bindir: The directory of `initdb` and `pg_ctl`; found by `postgres_bindir` if None.
    """

    def __init__(self, *, bindir: Path | None = None) -> None:
        found = bindir or postgres_bindir()
        if found is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self._bin = found
        self._port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="agentexec-pg-"))
        shutil.chown(self._dir, user="postgres")
        self._running = False

    @property
    def port(self) -> int:
        """The server's port on 127.0.0.1."""
        return self._port

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the `postgres` database."""
        return self.database_url("postgres")

    @property
    def running(self) -> bool:
        """Whether the server was started and not stopped since."""
        return self._running

    @property
    def _data(self) -> Path:
        return self._dir / "data"

    @property
    def _log(self) -> Path:
        return self._dir / "log"

    def database_url(self, name: str) -> str:
        """The SQLAlchemy URL of a database on this server.

        Args:
            name: The database's name.
        """
        return f"postgresql+psycopg://postgres@127.0.0.1:{self._port}/{name}"

    def start(self) -> None:
        """Create the cluster on the first start, then start the server and wait for it.

        Raises:
            RuntimeError: initdb or pg_ctl failed; the message holds the server log's tail.
        """
        if self._running:
            return
        if not self._data.exists():
            initdb = [str(self._bin / "initdb"), "-D", str(self._data), "-A", "trust"]
            initdb += ["-U", "postgres", "-E", "UTF8", "--no-sync", "--no-instructions"]
            self._as_postgres(initdb, "initdb")
        options = f"-p {self._port} -k {self._dir} -c listen_addresses=127.0.0.1"
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._pg_ctl("start", "-o", options, "-l", str(self._log), "-t", str(int(START_TIMEOUT)))
        self._running = True

    def stop(self) -> None:
        """Stop the server (fast shutdown: the outage) and wait until it is down.

        Raises:
            RuntimeError: pg_ctl failed.
        """
        if not self._running:
            return
        self._pg_ctl("stop", "-m", "fast", "-t", str(int(STOP_TIMEOUT)))
        self._running = False

    def restart(self) -> None:
        """Stop the server, then start it again on the same port and data."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server if it runs (immediately if a fast stop fails), remove its files."""
        try:
            self.stop()
        except RuntimeError:
            self._pg_ctl("stop", "-m", "immediate", "-t", str(int(STOP_TIMEOUT)))
            self._running = False
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """Create a database on this server.

        Args:
            name: The new database's name.

        Returns:
            The SQLAlchemy URL of the new database.
        """
        with psycopg.connect(
            host="127.0.0.1", port=self._port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.database_url(name)

    def _pg_ctl(self, *args: str) -> None:
        """Run `pg_ctl -D <data> -w <args>` as the postgres user."""
        argv = [str(self._bin / "pg_ctl"), "-D", str(self._data), "-w", *args]
        self._as_postgres(argv, f"pg_ctl {args[0]}")

    def _as_postgres(self, argv: list[str], what: str) -> None:
        """Run a command as the postgres user, in the cluster's directory."""
        command = f"cd {shlex.quote(str(self._dir))} && {shlex.join(argv)}"
        _run(["su", "postgres", "-c", command], what, self._log)


@contextlib.contextmanager
def app_on(redis_url: str) -> Iterator[None]:
    """agentexec's Celery app in this process publishes to and reads results from
    `redis_url` until the block ends (it was configured at import, from the settings then)."""
    from agentexec.tasks.app import app
    from agentexec.tasks.config import backend_url
    from agentexec.tasks.results import _close_sync

    def point(broker: str, backend: str) -> None:
        _close_sync(app)
        app.conf.broker_url, app.conf.result_backend = broker, backend
        app._backend_cache = None  # type: ignore[attr-defined]
        app._local = threading.local()  # type: ignore[attr-defined]

    saved = app.conf.broker_url, app.conf.result_backend
    point(redis_url, backend_url(redis_url))
    try:
        yield
    finally:
        point(*saved)
