"""The image test: without Docker, the Dockerfile's own `uv sync` lines run on a copy of what its
COPY lines copy, into a fresh environment under pytest's tmp directory; then everything the
image's services import and start must be there.

It follows the Dockerfile: a sync that removes a package, an extra left out of the lock, or a
source the COPY lines forget fails here. All build stages share one directory tree (the
runtime stage copies /app/.venv from the build stage to the same path). The repository's own
.venv is never used: the commands run the fresh environment's executables, with a PATH and
PYTHONPATH mapped from the Dockerfile's ENV.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_compose import ROOT, dockerfile_instructions, dockerignored, env_instruction

pytestmark = pytest.mark.timeout(600)

#: Environment variables a test run sets that must not leak into the image's processes.
_HOST_ONLY = ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH", "PYTHONHOME", "UV_PYTHON")
#: The secrets and settings the API and worker need to import: harmless values.
_IMPORT_ENV = {
    "API_TOKENS": "image-test-token-0123456789",
    # A closed port: importing must not need Redis.
    "REDIS_URL": "redis://:image-test-password@127.0.0.1:1/0",
}


@dataclass
class Step:
    """One instruction the test replays: a COPY (sources, destination) or a `uv sync`."""

    kind: str
    workdir: str
    argv: list[str]
    env: dict[str, str]


def plan() -> tuple[list[Step], dict[str, str], str]:
    """The COPY and `uv sync` steps in order, the final stage's ENV and WORKDIR."""
    steps: list[Step] = []
    workdir = "/"
    env: dict[str, str] = {}
    for keyword, arguments in dockerfile_instructions():
        if keyword == "FROM":
            workdir, env = "/", {}
        elif keyword == "WORKDIR":
            workdir = os.path.join(workdir, arguments)
        elif keyword == "ENV":
            env.update(env_instruction(arguments))
        elif keyword == "COPY" and "--from=" not in arguments:
            words = [word for word in shlex.split(arguments) if not word.startswith("--")]
            steps.append(Step("copy", workdir, words, dict(env)))
        elif keyword == "RUN":
            words = shlex.split(arguments)
            while words and words[0].startswith("--"):  # --mount=...: BuildKit's, not the shell's
                words.pop(0)
            for command in " ".join(words).split("&&"):
                argv = shlex.split(command)
                if argv[:2] == ["uv", "sync"]:
                    steps.append(Step("sync", workdir, argv, dict(env)))
    return steps, env, workdir


def python_version() -> str:
    """The base image's Python minor version (python:3.12-slim-... gives 3.12)."""
    for keyword, arguments in dockerfile_instructions():
        if keyword == "FROM" and arguments.startswith("python:"):
            return ".".join(arguments.split(":")[1].split("-")[0].split(".")[:2])
    raise AssertionError("no python base image")


@dataclass
class Image:
    """The fresh environment and how the image's processes see it."""

    root: Path
    venv: Path
    workdir: Path
    env: dict[str, str]
    installed: list[list[str]]

    @property
    def python(self) -> str:
        return self.bin("python")

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def which(self, name: str) -> str | None:
        """What a bare command name runs in the image: found on the image's PATH."""
        return shutil.which(name, path=self.env["PATH"])

    def run(
        self, *argv: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            cwd=cwd or self.workdir,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )


def _host(root: Path, path: str) -> Path:
    """Where a path of the image lives under the test's root."""
    return root / path.lstrip("/")


def _host_env(root: Path, env: dict[str, str]) -> dict[str, str]:
    """The Dockerfile's ENV with its paths moved under root, $PATH the host's (without the
    repository's .venv)."""
    outside = [p for p in os.environ["PATH"].split(":") if not p.startswith(str(ROOT))]
    mapped = {}
    for name, value in env.items():
        parts = []
        for part in value.split(":"):
            if part == "$PATH":
                parts += outside
            elif part.startswith("/"):
                parts.append(str(_host(root, part)))
            else:
                parts.append(part)
        mapped[name] = ":".join(parts)
    return mapped


def _installed(venv: Path) -> list[str]:
    site = next((venv / "lib").glob("python*/site-packages"))
    return sorted(path.name.split("-")[0].lower() for path in site.glob("*.dist-info"))


def _ignore(directory: str, names: list[str]) -> set[str]:
    """copytree's ignore: the entries .dockerignore leaves out of the context."""
    base = Path(directory).relative_to(ROOT).as_posix()
    return {name for name in names if dockerignored(name if base == "." else f"{base}/{name}")}


def _copy(root: Path, step: Step) -> None:
    """COPY's semantics for the forms the Dockerfile uses: a directory's contents into the
    destination; several sources (or a destination ending in /) into that directory."""
    *sources, dest = step.argv
    into = _host(root, os.path.join(step.workdir, dest))
    for source in sources:
        path = ROOT / source
        target = into / path.name if dest.endswith("/") or len(sources) > 1 else into
        if path.is_dir():
            shutil.copytree(path, target, ignore=_ignore, dirs_exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def build(root: Path) -> Image:
    """Replay the Dockerfile's COPY and `uv sync` steps into root."""
    steps, final_env, final_workdir = plan()
    base_env = {k: v for k, v in os.environ.items() if k not in _HOST_ONLY}
    # The base image's Python if this machine has it, else any the lock allows (uv's choice).
    found = subprocess.run(
        ["uv", "python", "find", python_version()],
        cwd=root,
        env={**base_env, "UV_PYTHON_DOWNLOADS": "never"},
        capture_output=True,
        text=True,
    )
    python = found.stdout.strip() if found.returncode == 0 else ""
    installed: list[list[str]] = []
    venv = root
    for step in steps:
        target = _host(root, step.workdir)
        target.mkdir(parents=True, exist_ok=True)
        if step.kind == "copy":
            _copy(root, step)
            continue
        env = {**base_env, **_host_env(root, step.env)}
        if python:
            env["UV_PYTHON"] = python
        done = subprocess.run(
            step.argv, cwd=target, env=env, capture_output=True, text=True, timeout=480
        )
        assert done.returncode == 0, f"{shlex.join(step.argv)}:\n{done.stderr}"
        # uv's project environment: .venv in the project, unless the Dockerfile names one.
        venv = target / env.get("UV_PROJECT_ENVIRONMENT", ".venv")
        installed.append(_installed(venv))
    env = {
        "HOME": str(root / "home"),
        "LANG": "C.UTF-8",
        **_host_env(root, final_env),
        **_IMPORT_ENV,
        "DATABASE_URL": f"sqlite:///{root / 'activity.db'}",
    }
    (root / "home").mkdir(exist_ok=True)
    return Image(root, venv, _host(root, final_workdir), env, installed)


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """Built once per test session: pytest-xdist's workers share it through a lock."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    shared = base / "image-test"
    shared.mkdir(exist_ok=True)
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = shared / "image.json"
        if not record.exists():
            root = Path(tmp_path_factory.mktemp("image"))
            built = build(root)
            paths = {name: str(getattr(built, name)) for name in ("root", "venv", "workdir")}
            record.write_text(json.dumps({**built.__dict__, **paths}))
    fields = json.loads(record.read_text())
    for name in ("root", "venv", "workdir"):
        fields[name] = Path(fields[name])
    return Image(**fields)


def test_each_sync_keeps_what_the_one_before_installed(image: Image) -> None:
    """The old Dockerfile's second sync removed the fastapi and uvicorn installed before it."""
    assert len(image.installed) >= 2
    for before, after in zip(image.installed, image.installed[1:], strict=False):
        assert set(before) <= set(after), set(before) - set(after)
    assert "agentexec" in image.installed[-1]


def test_the_fresh_environment_is_not_the_repository_one(image: Image) -> None:
    code = "import sys, agentexec; print(sys.prefix, agentexec.__file__)"
    done = image.run(image.python, "-c", code)
    assert done.returncode == 0, done.stderr
    prefix, module = done.stdout.split()
    assert Path(prefix) == image.venv and image.venv.is_relative_to(image.root)
    assert image.which("python") == image.python
    # --no-editable: agentexec is installed, not read from a source tree.
    assert "site-packages" in module and str(image.root) in module


def test_the_services_modules_import_without_redis(image: Image) -> None:
    modules = ["myapp.main", "myapp.worker", "agentexec.web", "psycopg", "uvicorn", "slowapi"]
    modules += ["flower", "websockets"]
    code = (
        "import importlib, sys\nfor m in sys.argv[1:]: print(importlib.import_module(m).__file__)"
    )
    done = image.run(image.python, "-c", code, *modules)
    assert done.returncode == 0, done.stderr
    files = done.stdout.split()
    assert files[0].startswith(str(image.workdir)), "myapp comes from the image's PYTHONPATH"


def test_flower_imports_its_app_without_the_database(image: Image, tmp_path: Path) -> None:
    """compose gives Flower REDIS_URL only, in a directory its user may write."""
    env = {k: v for k, v in image.env.items() if k not in ("DATABASE_URL", "API_TOKENS")}
    done = image.run(image.python, "-c", "import myapp.worker", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["uvicorn", "--help"],
        # `python -m myapp.worker` takes no options (it starts a worker): celery's entry point.
        ["celery", "--help"],
        ["agentexec", "db", "upgrade", "--help"],
        ["agentexec", "check", "--help"],
    ],
    ids=shlex.join,
)
def test_the_services_commands_start(image: Image, argv: list[str]) -> None:
    # compose's commands name bare executables: the image's PATH finds them in the venv.
    assert image.which(argv[0]) == image.bin(argv[0])
    done = image.run(image.bin(argv[0]), *argv[1:])
    assert done.returncode == 0, done.stderr


def test_the_flower_command_starts(image: Image) -> None:
    done = image.run(image.bin("agentexec"), "flower", "--help")
    if "No such command 'flower'" in done.stderr:
        pytest.skip("`agentexec flower` (compose's flower command) is not in agentexec yet")
    assert done.returncode == 0, done.stderr
