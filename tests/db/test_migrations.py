"""The shipped migrations build exactly the models' tables, and `agentexec db` runs them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import Engine, MetaData, Table, create_engine, func, inspect, select
from sqlalchemy.orm import Session

from agentexec.cli import main
from agentexec.client.activity import detail
from agentexec.db import migrations, projection
from agentexec.db.models import Activity, ActivityLog, Base
from agentexec.eventlog.event import Event
from agentexec.runtime import Runtime, get_runtime, set_runtime
from agentexec.states import Status


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


def _upgrades_to_the_models(engine: Engine) -> None:
    """`agentexec db upgrade` succeeds and leaves the tables at head, as the models are."""
    outcome = _db("upgrade")
    assert outcome.exit_code == 0, outcome.output
    assert migrations.current_revision(get_runtime().engine) == migrations.head_revision()
    with engine.connect() as conn:
        assert migrations.differences(conn) == []


def test_upgrade_of_an_empty_database_matches_the_models(engine: Engine) -> None:
    outcome = _db("upgrade")
    assert outcome.exit_code == 0, outcome.output
    head = migrations.head_revision()
    assert f"empty -> {head}" in outcome.output
    with engine.connect() as conn:
        assert migrations.differences(conn) == []
        names = set(inspect(conn).get_table_names())
    assert {Activity.__tablename__, ActivityLog.__tablename__} <= names
    assert migrations.version_table() in names
    assert _db("upgrade").output.strip() == f"activity tables already at {head}"
    assert _db("current").output.strip() == f"{head} (head: {head})"


def test_the_comparison_sees_a_difference(engine: Engine) -> None:
    assert _db("upgrade").exit_code == 0
    with engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE {Activity.__tablename__} ADD COLUMN extra INTEGER")
    with engine.connect() as conn:
        assert [diff[0] for diff in migrations.differences(conn)] == ["remove_column"]


def test_tables_from_create_all_are_recorded_as_up_to_date(engine: Engine) -> None:
    Base.metadata.create_all(engine)
    _upgrades_to_the_models(engine)


def test_unversioned_tables_that_differ_are_left_alone(engine: Engine) -> None:
    Activity.__table__.create(engine)  # the log table is missing
    outcome = _db("upgrade")
    assert outcome.exit_code == 1
    assert "agentexec db stamp REVISION" in outcome.output
    assert migrations.current_revision(get_runtime().engine) is None
    assert _db("stamp", migrations.head_revision()).exit_code == 0
    assert migrations.current_revision(get_runtime().engine) == migrations.head_revision()


def test_tables_of_an_earlier_version_are_migrated_with_their_rows(engine: Engine) -> None:
    """Tables as agentexec made them before the event log (revision 0001, by `create_all`, so
    without a version): `upgrade` finds their revision by their columns and migrates them;
    their log rows keep their order, and the event log's writes apply on top."""
    assert _db("upgrade", "--revision", "0001").exit_code == 0
    agent_id = uuid.uuid4()
    inspector = inspect(engine)
    columns = {
        c["name"] for t in (Activity, ActivityLog) for c in inspector.get_columns(t.__tablename__)
    }
    assert {"agent_id", "status"} <= columns and not {"seq", "last_seq"} & columns
    # The models' tables type the values; the columns 0002 adds are left out.
    activity, log = Activity.__table__, ActivityLog.__table__
    now = datetime.now(UTC)
    with engine.begin() as conn:
        Table(migrations.version_table(), MetaData()).drop(conn)  # as create_all left it
        conn.execute(
            activity.insert().values(
                agent_id=agent_id, agent_type="research", status="RUNNING",
                latest_completion_percentage=50, latest_log="Halfway",
                created_at=now, updated_at=now,
            )
        )  # fmt: skip
        for message, status, percent in [
            ("Task queued", "QUEUED", None),
            ("Task started", "RUNNING", 0),
            ("Halfway", "RUNNING", 50),
        ]:
            conn.execute(
                log.insert().values(
                    agent_id=agent_id, message=message, status=status,
                    completion_percentage=percent, created_at=now,
                )
            )  # fmt: skip

    outcome = _db("upgrade")
    assert outcome.exit_code == 0, outcome.output
    assert (
        outcome.output.strip() == f"activity tables upgraded: 0001 -> {migrations.head_revision()}"
    )
    with engine.connect() as conn:
        assert migrations.differences(conn) == []
    end = Event(agent_id, Status.COMPLETE, "Task completed", percentage=100, seq=10**15)
    with engine.begin() as conn:
        projection.apply(conn, [end])
    with Session(engine) as session:
        run = detail(session, agent_id)
        assert run is not None
        assert (run.status, run.latest_completion_percentage) == (Status.COMPLETE, 100)
        assert [entry.message for entry in run.logs] == [
            "Task queued", "Task started", "Halfway", "Task completed",
        ]  # fmt: skip


def test_tables_recorded_at_an_older_revision_than_their_columns_are_recorded_again(
    engine: Engine,
) -> None:
    """agentexec's first migration made the event log's tables as "0001": such a database is
    recorded at the revision its columns match, and upgrades without error."""
    assert _db("upgrade").exit_code == 0
    assert _db("stamp", "0001").exit_code == 0
    _upgrades_to_the_models(engine)


def test_downgrade_to_the_schema_before_the_event_log_keeps_the_rows(engine: Engine) -> None:
    """On SQLite a batch migration copies a table: the runs' table must not be copied, since
    dropping the old copy would cascade to the log."""
    assert _db("upgrade").exit_code == 0
    agent_id = uuid.uuid4()
    with engine.begin() as conn:
        for seq, status in enumerate([Status.QUEUED, Status.RUNNING], start=1):
            projection.apply(conn, [Event(agent_id, status, f"step {seq}", seq=seq, task="t")])
    with engine.begin() as conn:
        command.downgrade(migrations.config(conn), "0001")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Activity.__table__)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(ActivityLog.__table__)).scalar() == 2


def test_tables_whose_indexes_match_no_revision_are_left_alone(engine: Engine) -> None:
    """The columns of revision 0001 without its index on the log's run id: not recorded at
    0001 (its upgrade would fail on the missing index), but refused with what to do."""
    assert _db("upgrade", "--revision", "0001").exit_code == 0
    with engine.begin() as conn:
        Table(migrations.version_table(), MetaData()).drop(conn)
        conn.exec_driver_sql(f"DROP INDEX ix_{ActivityLog.__tablename__}_agent_id")
    outcome = _db("upgrade")
    assert outcome.exit_code == 1
    assert "agentexec db stamp REVISION" in outcome.output
    assert migrations.current_revision(get_runtime().engine) is None
