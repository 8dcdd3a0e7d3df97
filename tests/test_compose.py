"""compose.yaml cannot run here (no Docker engine), so it is read against the code."""

from __future__ import annotations

import importlib.util
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from agentexec.config import Settings

ROOT = Path(__file__).parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
APP_SRC = ROOT / "examples" / "fastapi_app" / "src"


def _settings_names() -> set[str]:
    names = {"REDIS_URL", "DATABASE_URL", "OPENAI_API_KEY", "FLOWER_BASIC_AUTH"}
    names |= {f"AGENTEXEC_{field.upper()}" for field in Settings.model_fields}
    return names


def test_every_service_is_there_and_depends_on_existing_ones() -> None:
    assert {"migrate", "api", "worker", "flower", "db", "redis"} <= set(SERVICES)
    for service in SERVICES.values():
        assert set(service.get("depends_on", {})) <= set(SERVICES)


def test_environment_uses_only_settings_agentexec_reads() -> None:
    for name in ("migrate", "api", "worker", "flower"):
        env = SERVICES[name]["environment"]
        assert set(env) <= _settings_names(), name
        assert env["REDIS_URL"].startswith("redis://redis:")
        Settings(_env_file=None, **{"redis_url": env["REDIS_URL"]})


def test_database_url_matches_the_db_service_and_an_installed_driver() -> None:
    url = SERVICES["api"]["environment"]["DATABASE_URL"]
    db = SERVICES["db"]["environment"]
    user = db["POSTGRES_USER"]
    assert (
        url == f"postgresql+psycopg://{user}:{db['POSTGRES_PASSWORD']}@db:5432/{db['POSTGRES_DB']}"
    )
    assert importlib.util.find_spec("psycopg") is not None


def test_commands_point_at_modules_that_exist() -> None:
    sys.path.insert(0, str(APP_SRC))
    try:
        api = shlex.split(SERVICES["api"]["command"])
        module, _, attr = api[1].partition(":")
        assert api[0] == "uvicorn" and importlib.util.find_spec(module) is not None
        assert attr == "app"
        worker = shlex.split(SERVICES["worker"]["command"])
        assert worker[:2] == ["python", "-m"] and importlib.util.find_spec(worker[2])
        flower = shlex.split(SERVICES["flower"]["command"])
        assert flower[:4] == ["celery", "-A", "agentexec", "flower"]
    finally:
        sys.path.remove(str(APP_SRC))
    migrate = shlex.split(SERVICES["migrate"]["command"])
    assert migrate == ["agentexec", "db", "upgrade", "-A", worker[2]]
    for name in ("api", "worker"):
        probe = SERVICES[name]["healthcheck"]["test"]
        assert probe[1:5] == ["agentexec", "check", "-A", worker[2]]
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    assert "--allow-no-workers" in SERVICES["api"]["healthcheck"]["test"]
    for name in ("migrate", "api", "worker", "flower"):
        assert SERVICES[name]["build"] == "."
        workdir = SERVICES[name]["working_dir"]
        assert workdir == "/app/examples/fastapi_app/src"
    assert (ROOT / "Dockerfile").exists()


def test_published_ports() -> None:
    assert SERVICES["api"]["ports"] == ["8000:8000"]
    assert SERVICES["flower"]["ports"] == ["5555:5555"]


def test_flower_requires_basic_auth_from_the_environment() -> None:
    env = SERVICES["flower"]["environment"]
    # `${VAR:?message}`: compose refuses to start without it.
    assert env["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    for service in SERVICES.values():
        assert "FLOWER_UNAUTHENTICATED_API" not in service.get("environment", {})
        assert "unauthenticated" not in str(service.get("command", "")).lower()


def test_redis_and_postgres_keep_their_data_in_named_volumes() -> None:
    volumes = set(COMPOSE["volumes"])

    def mounts(service: str) -> dict[str, str]:
        pairs = (entry.split(":", 1) for entry in SERVICES[service]["volumes"])
        return {target: source for source, target in pairs}

    assert mounts("redis")["/data"] in volumes
    assert "--appendonly yes" in SERVICES["redis"]["command"]
    assert mounts("db")["/var/lib/postgresql/data"] in volumes


def test_worker_grace_period_covers_the_shutdown_timeout() -> None:
    """Docker must not SIGKILL a worker that is still requeueing its agents."""
    grace = SERVICES["worker"]["stop_grace_period"]
    assert grace.endswith("s"), grace
    timeout = float(SERVICES["worker"]["environment"].get("AGENTEXEC_SHUTDOWN_TIMEOUT", 0) or 0)
    assert float(grace[:-1]) >= (timeout or Settings().shutdown_timeout) + 5
