"""The docs stand alone and stay true: no path outside the repository, no file that is not
there, every setting in the README's table with its default, and a Quickstart that runs as
written."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pydantic import AliasChoices

from agentexec.config import Settings
from agentexec.testing import ScriptedOpenAIServer, WorkerProcess

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
#: Files the docs name that a command writes (git-ignored), rather than the repository holds.
GENERATED = {"bench/results/latest.md", "bench/results/latest.json"}
_SKIP_DIRS = {".venv", ".git", "node_modules", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def _repo_files() -> list[Path]:
    return [
        path
        for path in ROOT.rglob("*")
        if path.is_file()
        and not _SKIP_DIRS & set(path.relative_to(ROOT).parts)
        and not str(path.relative_to(ROOT)).startswith("bench/.venv-upstream")
    ]


def _docs() -> list[Path]:
    """The README, every other markdown file, and the code whose comments users read."""
    return [
        path
        for path in _repo_files()
        if path.suffix in (".md", ".py", ".yaml", ".toml") or path.name == "Dockerfile"
    ]


def _outside_paths(doc: Path, text: str) -> list[str]:
    """Relative paths in `text` that leave the repository."""
    found = []
    for match in re.finditer(r"[\w./-]*\.\./[\w./-]*", text):
        target = (doc.parent / match.group()).resolve()
        if not target.is_relative_to(ROOT):
            found.append(match.group())
    return found


def _missing_markdown(text: str, names: set[str]) -> list[str]:
    """`*.md` files named in `text` that the repository does not hold."""
    missing = []
    for match in re.finditer(r"[\w./-]+\.md\b", text):
        name = match.group().lstrip("./")
        if Path(name).name in {Path(g).name for g in GENERATED}:
            continue
        if name not in names and Path(name).name not in {Path(n).name for n in names}:
            missing.append(name)
    return missing


def test_docs_name_nothing_outside_the_repository() -> None:
    names = {str(p.relative_to(ROOT)) for p in _repo_files() if p.suffix == ".md"}
    problems = {}
    for doc in _docs():
        if doc == Path(__file__).resolve():
            continue
        text = doc.read_text(errors="replace")
        bad = _outside_paths(doc, text) + _missing_markdown(text, names)
        bad += [word for word in ("shared/", "DESIGN.md", "SEED_API") if word in text]
        if bad:
            problems[str(doc.relative_to(ROOT))] = bad
    assert problems == {}


def test_markdown_links_point_at_files_that_exist() -> None:
    for doc in (p for p in _repo_files() if p.suffix == ".md"):
        for target in re.findall(r"\]\(([^)#\s]+)", doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            assert (doc.parent / target).resolve().exists(), f"{doc.name}: {target}"


#: Span and attribute names (`agentexec.run`, `agentexec.stopped`): strings, not modules.
_SPAN_NAMES = set(re.findall(r'"(agentexec\.\w+)', (ROOT / "agentexec/telemetry.py").read_text()))


def _stale_code_names(text: str) -> list[str]:
    """`agentexec/...` files and `agentexec.x.y` names in `text` that the package lacks."""
    stale = [
        m for m in re.findall(r"agentexec/[\w/]+\.(?:py|html)", text) if not (ROOT / m).exists()
    ]
    for dotted in set(re.findall(r"\bagentexec(?:\.[A-Za-z_]\w*)+", text)) - _SPAN_NAMES:
        parts = dotted.split(".")
        found = None
        for end in range(len(parts), 1, -1):
            try:
                found = importlib.import_module(".".join(parts[:end]))
            except ImportError:
                continue
            rest = parts[end:]
            break
        if found is None or (rest and not hasattr(found, rest[0])):
            stale.append(dotted)
    return stale


def test_the_docs_name_only_code_that_exists() -> None:
    """Module paths in the docs move with the code (upstream's notes name upstream's)."""
    docs = [p for p in _repo_files() if p.suffix == ".md" and "upstream" not in p.parts]
    problems = {str(d.relative_to(ROOT)): _stale_code_names(d.read_text()) for d in docs}
    assert {doc: names for doc, names in problems.items() if names} == {}


def test_the_checks_catch_what_they_should(tmp_path: Path) -> None:
    doc = ROOT / "README.md"
    assert _outside_paths(doc, "see ../shared/DESIGN.md") == ["../shared/DESIGN.md"]
    assert _outside_paths(doc, "see examples/../bench") == []
    assert _missing_markdown("read DESIGN.md", {"README.md"}) == ["DESIGN.md"]
    stale = "`agentexec/loop.py`, `agentexec.supervision`, `agentexec.runtime.Nothing`"
    assert sorted(_stale_code_names(stale)) == [
        "agentexec.runtime.Nothing",
        "agentexec.supervision",
        "agentexec/loop.py",
    ]
    assert _stale_code_names("`agentexec/worker/loop.py`, `agentexec.runtime.Runtime`") == []


def _settings_table() -> dict[str, str]:
    """variable -> default, from the README's settings table."""
    section = README.read_text().split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z_]+)` \| `([^`]*)` \|", section, flags=re.M)
    return dict(rows)


def _variable(name: str) -> str:
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"AGENTEXEC_{name.upper()}"


def _shown(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def test_the_settings_table_lists_every_setting_with_its_default() -> None:
    table = _settings_table()
    expected = {
        _variable(name): _shown(field.default) for name, field in Settings.model_fields.items()
    }
    assert table == expected


QUICKSTART_FILES = ("worker.py", "enqueue.py")


def _quickstart(directory: Path) -> None:
    """Write the Quickstart's files, exactly as the README shows them."""
    section = README.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    by_name = {block.splitlines()[0].removeprefix("# "): block for block in blocks}
    assert set(by_name) == set(QUICKSTART_FILES)
    for name, code in by_name.items():
        (directory / name).write_text(code)


@pytest.mark.parametrize(
    "worker_command",
    # `agentexec worker -A worker` is the other way; tests/cli/test_worker.py runs that one.
    [["worker.py"]],
    ids=["pool.run"],
)
def test_the_quickstart_runs_as_written(
    agentexec_redis_url: str, tmp_path: Path, sqlite_only: None, worker_command: list[str]
) -> None:
    _quickstart(tmp_path)
    with ScriptedOpenAIServer() as server:
        env = {
            **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
            "REDIS_URL": agentexec_redis_url,
            "AGENTEXEC_QUEUE_PREFIX": f"test-{uuid.uuid4().hex[:12]}",
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": "test",
            "OPENAI_AGENTS_DISABLE_TRACING": "1",
            "PYTHONPATH": "",
        }
        worker = WorkerProcess(
            [sys.executable, *worker_command], env, tmp_path, tmp_path / "worker.log"
        )
        worker.start()
        try:
            out = subprocess.run(
                [sys.executable, "enqueue.py"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=90,
            )
        finally:
            worker.stop()
    assert out.returncode == 0, out.stdout + out.stderr + worker.log()
    assert "findings: Done: Research Acme" in out.stdout
    # At the default log level a worker says it is ready, and logs each status report.
    assert " ready." in worker.log() and "RUNNING 50%: Working on it" in worker.log()
    assert out.stdout.splitlines()[-4:] == [
        "QUEUED None Task queued",
        "RUNNING 0 Task started",
        "RUNNING 50 Working on it",
        "COMPLETE 100 Task completed",
    ]
    listed = subprocess.run(
        [sys.executable, "-m", "agentexec", "list"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "research_company" in listed.stdout and "COMPLETE" in listed.stdout


@pytest.mark.parametrize("name", QUICKSTART_FILES)
def test_quickstart_files_are_formatted_code(name: str, tmp_path: Path) -> None:
    _quickstart(tmp_path)
    compile((tmp_path / name).read_text(), name, "exec")
