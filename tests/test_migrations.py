"""The shipped migrations build exactly the models' tables, and `agentexec db` runs them."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner
from sqlalchemy import create_engine, inspect

from agentexec import migrations
from agentexec.cli import main
from agentexec.db.models import Base
from agentexec.runtime import Runtime, set_runtime


def _db(*args: str) -> Any:
    return CliRunner().invoke(main, ["db", *args], catch_exceptions=False)


def test_upgrade_of_an_empty_database_matches_the_models(agentexec_database_url: str) -> None:
    previous = set_runtime(Runtime(database_url=agentexec_database_url))
    try:
        outcome = _db("upgrade")
        assert outcome.exit_code == 0, outcome.output
        head = migrations.head_revision()
        assert f"empty -> {head}" in outcome.output
        engine = create_engine(agentexec_database_url)
        with engine.connect() as conn:
            assert migrations.differences(conn) == []
            names = set(inspect(conn).get_table_names())
        engine.dispose()
        assert {"agentexec_activity", "agentexec_activity_log"} <= names
        assert migrations.version_table() in names
        assert _db("upgrade").output.strip() == f"activity tables already at {head}"
        assert _db("current").output.strip() == f"{head} (head: {head})"
    finally:
        set_runtime(previous).stop()


def test_tables_from_create_all_are_recorded_as_up_to_date(agentexec_database_url: str) -> None:
    previous = set_runtime(Runtime(database_url=agentexec_database_url))
    try:
        engine = create_engine(agentexec_database_url)
        Base.metadata.create_all(engine)
        outcome = _db("upgrade")
        assert outcome.exit_code == 0, outcome.output
        assert migrations.current_revision() == migrations.head_revision()
        with engine.connect() as conn:
            assert migrations.differences(conn) == []
        engine.dispose()
    finally:
        set_runtime(previous).stop()


def test_unversioned_tables_that_differ_are_left_alone(agentexec_database_url: str) -> None:
    previous = set_runtime(Runtime(database_url=agentexec_database_url))
    try:
        engine = create_engine(agentexec_database_url)
        Base.metadata.tables["agentexec_activity"].create(engine)  # the log table is missing
        outcome = CliRunner().invoke(main, ["db", "upgrade"])
        assert outcome.exit_code == 1
        assert "agentexec db stamp REVISION" in outcome.output
        assert migrations.current_revision() is None
        engine.dispose()
    finally:
        set_runtime(previous).stop()
