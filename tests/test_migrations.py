"""The shipped migrations build exactly the models' tables, and `agentexec db` runs them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, inspect

from agentexec import migrations
from agentexec.cli import main
from agentexec.db.models import Base
from agentexec.runtime import Runtime, set_runtime


@pytest.fixture
def engine(agentexec_database_url: str) -> Iterator[Engine]:
    """The test's empty database, also bound to this process's runtime (as `-A` binds it)."""
    runtime = Runtime(database_url=agentexec_database_url)
    previous = set_runtime(runtime)
    engine = create_engine(agentexec_database_url)
    yield engine
    engine.dispose()
    set_runtime(previous)
    runtime.stop()
    runtime.engine.dispose()


def _db(*args: str) -> Any:
    return CliRunner().invoke(main, ["db", *args])


def test_upgrade_of_an_empty_database_matches_the_models(engine: Engine) -> None:
    outcome = _db("upgrade")
    assert outcome.exit_code == 0, outcome.output
    head = migrations.head_revision()
    assert f"empty -> {head}" in outcome.output
    with engine.connect() as conn:
        assert migrations.differences(conn) == []
        names = set(inspect(conn).get_table_names())
    assert {"agentexec_activity", "agentexec_activity_log"} <= names
    assert migrations.version_table() in names
    assert _db("upgrade").output.strip() == f"activity tables already at {head}"
    assert _db("current").output.strip() == f"{head} (head: {head})"


def test_the_comparison_sees_a_difference(engine: Engine) -> None:
    assert _db("upgrade").exit_code == 0
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE agentexec_activity ADD COLUMN extra INTEGER")
    with engine.connect() as conn:
        assert [diff[0] for diff in migrations.differences(conn)] == ["remove_column"]


def test_tables_from_create_all_are_recorded_as_up_to_date(engine: Engine) -> None:
    Base.metadata.create_all(engine)
    outcome = _db("upgrade")
    assert outcome.exit_code == 0, outcome.output
    assert migrations.current_revision() == migrations.head_revision()
    with engine.connect() as conn:
        assert migrations.differences(conn) == []


def test_unversioned_tables_that_differ_are_left_alone(engine: Engine) -> None:
    Base.metadata.tables["agentexec_activity"].create(engine)  # the log table is missing
    outcome = _db("upgrade")
    assert outcome.exit_code == 1
    assert "agentexec db stamp REVISION" in outcome.output
    assert migrations.current_revision() is None
    assert _db("stamp", migrations.head_revision()).exit_code == 0
    assert migrations.current_revision() == migrations.head_revision()
