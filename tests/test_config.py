"""Settings: read from the environment, once, with the names the stack already uses."""

from __future__ import annotations

import threading

import pytest

from agentexec.config import Settings, get_settings


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
    with pytest.raises(ValueError, match="AGENTEXEC_NUM_WORKERS"):
        Settings(_env_file=None)


@pytest.mark.parametrize("prefix", ["My-App_", "Agents_", "1st_", "a b", ""])
def test_a_table_prefix_that_would_need_quoting_is_refused(
    monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    monkeypatch.setenv("AGENTEXEC_TABLE_PREFIX", prefix)
    with pytest.raises(ValueError, match="AGENTEXEC_TABLE_PREFIX must be lower case letters"):
        Settings(_env_file=None)


def _first_call(barrier: threading.Barrier, seen: list[Settings]) -> None:
    barrier.wait()
    seen.append(get_settings())


def test_threads_that_read_the_settings_first_at_once_share_one_object() -> None:
    """A change to the settings object (a test's monkeypatch) reaches every caller, even when
    several threads built it at the same moment (`lru_cache` gave some a copy it did not keep)."""
    for _ in range(300):
        get_settings.cache_clear()
        barrier, seen = threading.Barrier(4), []
        threads = [threading.Thread(target=_first_call, args=(barrier, seen)) for _ in range(3)]
        for thread in threads:
            thread.start()
        _first_call(barrier, seen)
        for thread in threads:
            thread.join()
        assert all(settings is get_settings() for settings in seen)
    get_settings.cache_clear()
