"""The private servers themselves: they start, stop, restart, and keep data as promised."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from tests.faults.services import (
    SHARED_PORTS,
    PrivatePostgres,
    PrivateRedis,
    free_port,
    postgres_available,
    redis_available,
    require_server,
)

pytestmark = pytest.mark.timeout(60)


def _redis_get(url: str, key: str) -> bytes | None:
    """One GET on a fresh connection, closed afterwards."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        value = client.get(key)
        assert value is None or isinstance(value, bytes)
        return value
    finally:
        client.close()


def _redis_set(url: str, key: str, value: str) -> None:
    """One SET on a fresh connection, closed afterwards."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.set(key, value)
    finally:
        client.close()


def test_free_port_is_private() -> None:
    assert free_port() not in SHARED_PORTS


def test_postgres_keeps_data_across_an_outage(private_postgres: PrivatePostgres) -> None:
    assert private_postgres.port not in SHARED_PORTS
    engine = create_engine(private_postgres.url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE notes (body text)"))
            conn.execute(text("INSERT INTO notes VALUES ('kept')"))

        private_postgres.stop()
        with pytest.raises(OperationalError), engine.connect():
            pass

        private_postgres.restart()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT body FROM notes")).scalars().all() == ["kept"]
    finally:
        engine.dispose()


def test_postgres_create_database(private_postgres: PrivatePostgres) -> None:
    url = private_postgres.create_database("fault_db")
    assert url.endswith(f":{private_postgres.port}/fault_db")
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar() == "fault_db"
    finally:
        engine.dispose()


def test_postgres_close_removes_everything() -> None:
    require_server("PostgreSQL", postgres_available())
    server = PrivatePostgres()
    with server:
        directory = server._dir
        assert server.running
    assert not server.running
    assert not Path(directory).exists()


def test_redis_aof_keeps_keys_across_restart(private_redis: PrivateRedis) -> None:
    assert private_redis.port not in SHARED_PORTS
    _redis_set(private_redis.url, "k", "v")

    private_redis.restart(save=False)

    assert _redis_get(private_redis.url, "k") == b"v"


def test_redis_stopped_refuses_connections(private_redis: PrivateRedis) -> None:
    private_redis.stop()
    with pytest.raises(redis.ConnectionError):
        _redis_get(private_redis.url, "k")
    private_redis.start()
    assert _redis_get(private_redis.url, "k") is None


def test_redis_without_aof_loses_keys_on_nosave_restart() -> None:
    require_server("Redis", redis_available())
    with PrivateRedis(appendonly=False) as server:
        _redis_set(server.url, "k", "v")

        server.restart(save=False)

        assert _redis_get(server.url, "k") is None


def test_redis_without_aof_keeps_keys_on_save_restart() -> None:
    require_server("Redis", redis_available())
    with PrivateRedis(appendonly=False) as server:
        _redis_set(server.url, "k", "v")

        server.restart(save=True)

        assert _redis_get(server.url, "k") == b"v"


def test_redis_close_removes_everything() -> None:
    require_server("Redis", redis_available())
    with PrivateRedis() as server:
        directory = server._dir
    assert not server.running
    assert not directory.exists()
