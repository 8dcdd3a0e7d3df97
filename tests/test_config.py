"""Settings: read from the environment, once, with the names the stack already uses."""

from __future__ import annotations

import pytest

from agentexec.config import Settings


def test_defaults_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "DATABASE_URL", "AGENTEXEC_NUM_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)
    assert settings.database_url == "sqlite:///agents.db"
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.num_workers >= 50
    assert (settings.high_queue, settings.low_queue) == ("agentexec.high", "agentexec.low")


def test_reads_plain_and_prefixed_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/2")
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/app")
    monkeypatch.setenv("AGENTEXEC_NUM_WORKERS", "4")
    monkeypatch.setenv("AGENTEXEC_QUEUE_PREFIX", "myapp")
    settings = Settings(_env_file=None)
    assert settings.redis_url == "redis://cache:6379/2"
    assert settings.database_url == "postgresql://db/app"
    assert settings.num_workers == 4
    assert settings.high_queue == "myapp.high"


def test_rejects_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTEXEC_NUM_WORKERS", "0")
    with pytest.raises(ValueError, match="num_workers"):
        Settings(_env_file=None)
