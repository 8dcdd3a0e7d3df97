"""`agentexec check`: passes on a healthy deployment, fails on each thing that is wrong, and
changes nothing. Run as a user runs it: a process of its own, in an empty directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from agentexec.db import migrations
from agentexec.db.models import Base
from agentexec.runtime import get_runtime
from agentexec.testing.plugin import StartWorker
from tests.faults.services import free_port

#: The database plays no part here: SQLite alone keeps the suite short.
pytestmark = pytest.mark.usefixtures("sqlite_only")

ROOT = Path(__file__).parent.parent.parent


def _check(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "agentexec", "check", "--timeout", "1", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def probe_dir(tmp_path: Path) -> Path:
    """An empty directory to run the probe in: it must stay empty."""
    directory = tmp_path / "probe"
    directory.mkdir()
    return directory


def test_passes_with_a_live_worker(
    agentexec_worker: StartWorker, agentexec_env: dict[str, str], probe_dir: Path
) -> None:
    agentexec_worker()
    out = _check(probe_dir, agentexec_env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "redis     ok" in out.stdout and "database  ok" in out.stdout
    assert f"consumes {agentexec_env['AGENTEXEC_QUEUE_PREFIX']}.high" in out.stdout
    assert list(probe_dir.iterdir()) == []


def test_fails_without_a_worker_unless_allowed(
    agentexec_env: dict[str, str], probe_dir: Path, sqlite_only: None
) -> None:
    out = _check(probe_dir, agentexec_env)
    assert out.returncode == 1
    assert "workers   FAIL no worker consumes" in out.stdout
    allowed = _check(probe_dir, agentexec_env, "--allow-no-workers")
    assert allowed.returncode == 0, allowed.stdout
    assert "workers   none no worker consumes" in allowed.stdout


def test_fails_when_redis_is_unreachable(
    agentexec_env: dict[str, str], probe_dir: Path, sqlite_only: None
) -> None:
    env = {**agentexec_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    out = _check(probe_dir, env, "--allow-no-workers")
    assert out.returncode == 1
    assert "redis     FAIL" in out.stdout


def test_fails_when_the_database_is_unreachable(
    agentexec_env: dict[str, str], probe_dir: Path, sqlite_only: None
) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    out = _check(probe_dir, {**agentexec_env, "DATABASE_URL": url}, "--allow-no-workers")
    assert out.returncode == 1
    assert "database  FAIL" in out.stdout and "OperationalError" in out.stdout


def test_fails_when_the_tables_are_missing(
    agentexec_env: dict[str, str], agentexec_database_url: str, probe_dir: Path
) -> None:
    engine = create_engine(agentexec_database_url)
    Base.metadata.drop_all(engine)
    engine.dispose()
    out = _check(probe_dir, agentexec_env, "--allow-no-workers")
    assert out.returncode == 1
    assert "missing tables agentexec_activity, agentexec_activity_log" in out.stdout
    engine = create_engine(agentexec_database_url)
    with engine.connect() as conn:
        assert not engine.dialect.has_table(conn, "agentexec_activity")  # still missing
    engine.dispose()


def test_fails_when_the_tables_are_out_of_date(
    agentexec_env: dict[str, str], agentexec_database_url: str, probe_dir: Path
) -> None:
    """Tables as agentexec made them before the event log (migration 0001): `db upgrade`
    is due."""
    engine = create_engine(agentexec_database_url)
    Base.metadata.drop_all(engine)
    engine.dispose()
    migrations.upgrade(get_runtime().engine, "0001")
    out = _check(probe_dir, agentexec_env, "--allow-no-workers")
    assert out.returncode == 1
    assert (
        "tables out of date, missing agentexec_activity.last_seq, agentexec_activity_log.seq "
        "(run `agentexec db upgrade`)"
    ) in out.stdout
    migrations.upgrade(get_runtime().engine)
    assert _check(probe_dir, agentexec_env, "--allow-no-workers").returncode == 0


def test_fails_without_creating_a_sqlite_file(
    agentexec_env: dict[str, str], probe_dir: Path, sqlite_only: None
) -> None:
    env = {**agentexec_env, "DATABASE_URL": "sqlite:///agents.db"}
    out = _check(probe_dir, env, "--allow-no-workers")
    assert out.returncode == 1
    assert "no activity database at sqlite:///agents.db" in out.stdout
    assert list(probe_dir.iterdir()) == []


def test_uses_the_database_of_the_worker_pool_module(
    agentexec_env: dict[str, str], agentexec_database_url: str, tmp_path: Path, sqlite_only: None
) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "probeapp.py").write_text(
        f"import agentexec as ax\npool = ax.WorkerPool(database_url={agentexec_database_url!r})\n"
    )
    env = {**agentexec_env, "DATABASE_URL": "sqlite:////nonexistent/agents.db"}
    out = _check(app_dir, env, "-A", "probeapp", "--allow-no-workers")
    assert out.returncode == 0, out.stdout + out.stderr
    assert agentexec_database_url in out.stdout
    assert sorted(p.name for p in app_dir.iterdir() if p.is_file()) == ["probeapp.py"]
    missing = _check(app_dir, env, "-A", "nosuchmodule")
    assert missing.returncode == 1 and "cannot import 'nosuchmodule'" in missing.stderr


def test_the_probe_sweeps_with_the_apps_broker_options() -> None:
    from agentexec.config import Settings
    from agentexec.tasks.config import celery_defaults, transport_options

    settings = Settings(queue_prefix="probe")
    app_options = celery_defaults(settings)["broker_transport_options"]
    probe = transport_options(settings)
    assert probe == {key: app_options[key] for key in probe}
