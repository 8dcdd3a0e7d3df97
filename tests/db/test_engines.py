"""agentexec changes only the engines it creates or is given, never the rest of the process."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session

from agentexec.db import engines
from agentexec.runtime import Runtime


def _foreign_keys(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("PRAGMA foreign_keys")).scalar_one())


def test_an_engine_agentexec_never_saw_is_left_alone(tmp_path: Path) -> None:
    mine = create_engine(f"sqlite:///{tmp_path / 'mine.db'}")
    engines.create(f"sqlite:///{tmp_path / 'agentexec.db'}")  # one agentexec made
    assert _foreign_keys(mine) == 0
    with Session(mine) as session, pytest.raises(ArgumentError):
        session.execute("SELECT 1")


def test_an_engine_agentexec_creates_gets_the_pragmas_and_sql_strings(tmp_path: Path) -> None:
    engine = engines.create(f"sqlite:///{tmp_path / 'agentexec.db'}")
    assert _foreign_keys(engine) == 1
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
    with Session(engine) as session:
        assert session.execute("SELECT 41 + 1").scalar_one() == 42


def test_an_engine_given_to_agentexec_is_adopted_with_its_pooled_connections(
    tmp_path: Path,
) -> None:
    given = create_engine(f"sqlite:///{tmp_path / 'given.db'}")
    assert _foreign_keys(given) == 0  # a connection now in the pool, made before adoption
    Runtime(engine=given)  # what `ax.WorkerPool(engine=given)` does
    assert _foreign_keys(given) == 1  # the same pooled connection, at its next checkout
    with Session(given) as session:
        assert session.execute("SELECT 1").scalar_one() == 1
    with given.connect() as conn:  # journal mode is the user's own choice
        assert conn.execute(text("PRAGMA journal_mode")).scalar_one() != "wal"


def test_sql_strings_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentexec.config import get_settings

    monkeypatch.setattr(get_settings(), "sql_string_compat", False)
    engine = engines.create(f"sqlite:///{tmp_path / 'strict.db'}")
    with Session(engine) as session, pytest.raises(ArgumentError):
        session.execute("SELECT 1")
