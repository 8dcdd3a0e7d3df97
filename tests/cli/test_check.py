"""`agentexec check`: passes on a healthy deployment, fails on each thing that is wrong, and
changes nothing. Run as a user runs it: a process of its own, in an empty directory."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine

from agentexec.db import migrations
from agentexec.db.models import Base
from agentexec.runtime import get_runtime
from agentexec.testing.plugin import StartWorker, require_service
from tests.faults.services import PrivateRedis, free_port, redis_available, require_server

#: The database plays no part here: SQLite alone keeps the suite short.
pytestmark = pytest.mark.usefixtures("sqlite_only")

ROOT = Path(__file__).parent.parent.parent
#: The module: `agentexec.cli.check` is the command, which the package re-exports.
check_module = importlib.import_module("agentexec.cli.check")


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
    assert (
        "missing tables agentexec_activity, agentexec_activity_approval, agentexec_activity_child, "
        "agentexec_activity_log, agentexec_activity_usage"
    ) in out.stdout
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
        "tables out of date, missing agentexec_activity.last_seq, agentexec_activity.owner, "
        "agentexec_activity_approval, agentexec_activity_child, agentexec_activity_log.seq, "
        "agentexec_activity_usage "
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


def test_warns_that_redis_keeps_nothing_across_a_restart(
    agentexec_env: dict[str, str], probe_dir: Path, sqlite_only: None
) -> None:
    """The shared test Redis runs without persistence: a warning, and still exit code 0."""
    client = redis.Redis.from_url(agentexec_env["REDIS_URL"])
    try:
        config = {**client.config_get("appendonly"), **client.config_get("save")}
    finally:
        client.close()
    out = _check(probe_dir, agentexec_env, "--allow-no-workers")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "redis     ok" in out.stdout and "database  ok" in out.stdout
    assert "events    ok   0 behind" in out.stdout
    assert "maxmemory-policy" not in out.stdout  # noeviction: nothing to say
    persistence_off = config == {"appendonly": "no", "save": ""}
    warned = "redis     warn persistence is off (appendonly no, no save)" in out.stdout
    assert warned == persistence_off, out.stdout


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A Redis of this test alone, without persistence, whose settings it may change."""
    require_server("Redis", redis_available())
    with PrivateRedis(appendonly=False) as server:
        yield server


def test_warns_when_redis_may_evict_keys(
    agentexec_env: dict[str, str], probe_dir: Path, private_redis: PrivateRedis
) -> None:
    client: Any = redis.Redis.from_url(private_redis.url)
    client.config_set("maxmemory-policy", "allkeys-lru")
    env = {**agentexec_env, "REDIS_URL": private_redis.url}
    out = _check(probe_dir, env, "--allow-no-workers")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"redis     ok   {private_redis.url}"
    assert lines[1].startswith(
        "redis     warn maxmemory-policy is allkeys-lru: evicted keys lose queued runs, "
        "results and events (set it to noeviction)"
    )
    assert lines[2].startswith("redis     warn persistence is off")
    # Where CONFIG is refused (a managed Redis), one warning says so.
    client.execute_command(
        "ACL", "SETUSER", "probe", "on", "nopass", "~*", "&*", "+@all", "-config"
    )
    client.close()
    refused_url = private_redis.url.replace("redis://", "redis://probe:any@")
    refused = _check(probe_dir, {**env, "REDIS_URL": refused_url}, "--allow-no-workers")
    assert refused.returncode == 0, refused.stdout + refused.stderr
    warnings = [line for line in refused.stdout.splitlines() if line.startswith("redis     warn")]
    assert len(warnings) == 1 and "cannot read its settings" in warnings[0], refused.stdout
    assert "make sure maxmemory-policy is noeviction" in warnings[0]


@pytest.fixture(params=["shared", "private"])
def log_redis(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[redis.Redis]:
    """A Redis holding an event log of this test alone, with no projector on it: the shared
    one (Redis 7 counts a group's lag) and a private one (the redis-server on PATH, which may
    be older and not count it)."""
    from agentexec.config import get_settings

    monkeypatch.setenv("AGENTEXEC_QUEUE_PREFIX", f"test-{uuid.uuid4().hex[:12]}")
    get_settings.cache_clear()
    if request.param == "shared":
        url = os.environ["REDIS_URL"]
        with redis.Redis.from_url(url, socket_connect_timeout=2) as client:
            try:
                client.ping()
            except redis.RedisError as exc:
                require_service("Redis", exc)
            yield client
            client.delete(get_settings().keys.events)
    else:
        require_server("Redis", redis_available())
        with PrivateRedis(appendonly=False) as server, redis.Redis.from_url(server.url) as client:
            yield client
    monkeypatch.undo()
    get_settings.cache_clear()


def test_warns_when_the_projection_falls_behind(
    log_redis: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentexec.config import get_settings
    from agentexec.keys import PROJECTOR_GROUP

    key = get_settings().keys.events
    client = log_redis

    def events() -> str:
        capsys.readouterr()
        check_module._events(client)
        return capsys.readouterr().out.strip()

    assert events() == "events    ok   0 behind"  # no log yet
    two_minutes_ago = int(time.time() * 1000) - 120_000
    for n in range(3):
        client.xadd(key, {"event": "{}"}, id=f"{two_minutes_ago}-{n}")
    unread = events()
    assert unread.startswith(f"events    warn 3 events in {key} and no projector ever read them")
    assert "(AGENTEXEC_PROJECTOR=false and no `agentexec project`?)" in unread
    assert "`agentexec project`; the log is never trimmed below what is unapplied" in unread

    client.xgroup_create(key, PROJECTOR_GROUP, id="0")
    client.xreadgroup(PROJECTOR_GROUP, "projector-1", {key: ">"}, count=1)  # pending, not acked
    behind = events()
    assert behind.startswith("events    warn SQL is 3 events behind, the oldest appended ")
    assert "start workers with the projector" in behind

    read: Any = client.xreadgroup(PROJECTOR_GROUP, "projector-1", {key: ">"})
    client.xack(key, PROJECTOR_GROUP, f"{two_minutes_ago}-0", *(i for i, _ in read[0][1]))
    assert events() == "events    ok   0 behind"

    with client.pipeline(transaction=False) as pipe:
        for _ in range(check_module.MAX_BEHIND + 1):
            pipe.xadd(key, {"event": "{}"})
        ids = pipe.execute()
    # Counted exactly from the group's lag, or up to the threshold where Redis has none.
    assert re.match(r"events    warn SQL is (10,001|more than 10,000) events behind", events())
    # A deleted entry leaves Redis without a lag for the group (as Redis before 7.0 always
    # is): the entries are counted instead.
    client.xdel(key, ids[-1])
    assert events() == "events    ok   10,000 behind"
    client.xadd(key, {"event": "{}"})
    assert events().startswith("events    warn SQL is more than 10,000 events behind")
