"""Table creation is safe when many processes start at once (the guide's API and workers)."""

from __future__ import annotations

import multiprocessing
import os
import uuid
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from agentexec.db.models import Base
from agentexec.testing.plugin import require_service

PROCESSES = 8
ROUNDS = 20


def _create_rounds(barrier: Barrier, urls: list[str], errors: Any) -> None:
    """One of the racing processes: every round, all of them create the same fresh schema."""
    import agentexec as ax

    for url in urls:
        engine = create_engine(url)
        try:
            barrier.wait(60)
            ax.Base.metadata.create_all(engine)  # the guide's own call
        except Exception as exc:
            errors.put(f"{type(exc).__name__}: {exc}")
        finally:
            engine.dispose()


@pytest.fixture
def fresh_schemas() -> Iterator[list[str]]:
    """`ROUNDS` empty PostgreSQL schemas, dropped at the end."""
    base = os.environ["POSTGRES_URL"]
    admin = create_engine(base)
    names = [f"race_{uuid.uuid4().hex[:10]}" for _ in range(ROUNDS)]
    try:
        with admin.begin() as conn:
            for name in names:
                conn.execute(text(f'CREATE SCHEMA "{name}"'))
    except Exception as exc:
        admin.dispose()
        require_service("PostgreSQL", exc)
    yield [f"{base}?options=-csearch_path%3D{name}" for name in names]
    with admin.begin() as conn:
        for name in names:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
    admin.dispose()


def test_eight_processes_create_the_tables_at_once(fresh_schemas: list[str]) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    errors = context.Queue()
    racers = [
        context.Process(target=_create_rounds, args=(barrier, fresh_schemas, errors))
        for _ in range(PROCESSES)
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(240)
    found = []
    while not errors.empty():
        found.append(errors.get())
    errors.close()
    assert found == []
    assert all(racer.exitcode == 0 for racer in racers)
    for url in fresh_schemas:
        engine = create_engine(url)
        try:
            tables = set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
        assert set(Base.metadata.tables) <= tables
