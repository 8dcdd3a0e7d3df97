"""Test setup: a dedicated Redis db, and every integration test on SQLite and PostgreSQL.

Integration tests use real services. Locally a missing service skips them; in CI (`CI` set)
it fails them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

# Before agentexec reads its settings: a Redis db of our own. Each test has its own queues
# (the `agentexec_env` fixture), so concurrent test runs do not disturb each other.
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

from sqlalchemy import create_engine, text

import tests.apps  # noqa: F401  (puts the user's app of the tests, `userapp`, on sys.path)
from agentexec.config import get_settings
from agentexec.testing.plugin import require_service

# The pytest plugin imported agentexec before this file set the environment.
get_settings.cache_clear()


@pytest.fixture(params=["sqlite", "postgresql"])
def agentexec_database_url(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[str]:
    """Each integration test runs on SQLite and on PostgreSQL (a schema of its own)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/activity.db"
        return
    base = os.environ["POSTGRES_URL"]
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        admin.dispose()
        require_service("PostgreSQL", exc)
    yield f"{base}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def sqlite_only() -> None:
    """Run a test on SQLite alone, where the database plays no part in what it checks."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the PostgreSQL copies of tests that ask for `sqlite_only`."""
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        is_pg = params.get("agentexec_database_url") == "postgresql"
        wants_sqlite = "sqlite_only" in getattr(item, "fixturenames", ())
        (drop if is_pg and wants_sqlite else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(autouse=True)
async def _close_agentexec_redis() -> AsyncIterator[None]:
    """Close the test loop's Redis connections even when the test fails halfway."""
    yield
    import agentexec as ax

    await ax.close_redis()
