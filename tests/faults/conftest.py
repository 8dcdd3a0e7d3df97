"""Fixtures of the fault tests: private Redis and PostgreSQL servers they may stop at will.

Locally, missing server binaries skip a test; in CI (`CI` set) they fail it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.services import (
    PrivatePostgres,
    PrivateRedis,
    postgres_available,
    redis_available,
    require_server,
)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A started Redis server of this test alone, with an append-only file."""
    require_server("Redis", redis_available())
    with PrivateRedis(appendonly=True) as server:
        yield server


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started PostgreSQL server of this test alone."""
    require_server("PostgreSQL", postgres_available())
    with PrivatePostgres() as server:
        yield server


@pytest.fixture
def agentexec_database_url(private_postgres: PrivatePostgres) -> str:
    """The activity database of a fault test: a fresh database on its private PostgreSQL."""
    return private_postgres.create_database("activity")
