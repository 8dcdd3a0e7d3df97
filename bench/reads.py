"""Measurement 4, activity reads: the list page and a detail, on a large PostgreSQL table.

`seed` fills the schema `bench_reads` of the benchmark database with agentexec's own tables
(`Base.metadata.create_all`) and, in SQL (`generate_series`), A activities and 10·A logs:
3/8 of the runs have 20 log rows (QUEUED, started, 17 reports, the end), the others 4; 90%
COMPLETE, 5% ERROR, 2% CANCELED, 2% RUNNING and 1% QUEUED; created over the last 30 days; the
`latest_*` columns match each run's newest log. Then VACUUM ANALYZE, as autovacuum would.

`measure` times, with a new `Session` per call as a web request would have, after a warm-up:
`ax.activity.list(session, page=1, page_size=20)` and `ax.activity.detail(session, id)` of
random runs that have 20 logs.

    uv run python -m bench.reads seed --activities 100000      # once per benchmark run
    uv run python -m bench.reads measure --n 500                # prints one JSON line
    uv run python -m bench.reads drop
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

from bench.common import (
    POSTGRES_URL,
    Case,
    Results,
    Row,
    by_run,
    emit,
    install_sigterm_exit,
    percentile,
    python_module,
    summarize,
    values,
    verdict,
)

SCHEMA = "bench_reads"
URL = f"{POSTGRES_URL}?options=-csearch_path%3D{SCHEMA}"
SIZES = {"quick": {"activities": 8_000, "n": 100}, "full": {"activities": 100_000, "n": 500}}

#: Activity i has 20 logs when i % 8 < 3, else 4: ten per activity on average.
HEAVY = "(i % 8 < 3)"
STATUS = """CASE
    WHEN i % 100 = 0 THEN 'QUEUED'
    WHEN i % 100 < 3 THEN 'RUNNING'
    WHEN i % 100 < 8 THEN 'ERROR'
    WHEN i % 100 < 10 THEN 'CANCELED'
    ELSE 'COMPLETE' END"""

SEED_SQL = [
    f"""
    CREATE TEMP TABLE seed AS
    SELECT i,
           md5('bench-' || i)::uuid AS agent_id,
           CASE WHEN {HEAVY} THEN 20 ELSE 4 END AS nlogs,
           {STATUS} AS status,
           now() - (:activities - i) * (interval '30 days' / :activities) AS created_at
    FROM generate_series(1, :activities) AS i
    """,
    """
    CREATE TEMP TABLE seed_log AS
    SELECT s.agent_id, s.i, j, s.nlogs, s.created_at + j * interval '1 second' AS created_at,
           CASE WHEN j = 1 THEN 'QUEUED'
                WHEN j < s.nlogs THEN 'RUNNING'
                ELSE s.status END AS status,
           CASE WHEN j = 1 THEN 'Task queued'
                WHEN j = 2 THEN 'Task started'
                WHEN j < s.nlogs THEN 'Step ' || (j - 2) || ': looking into source ' || (s.i % 97)
                WHEN s.status = 'COMPLETE' THEN 'Task completed'
                WHEN s.status = 'ERROR' THEN 'RuntimeError: upstream model timed out'
                WHEN s.status = 'CANCELED' THEN 'Canceled'
                WHEN s.status = 'QUEUED' THEN 'Retry 1 queued'
                ELSE 'Step ' || (j - 2) || ': writing up' END AS message,
           CASE WHEN j = 1 THEN NULL
                WHEN j = 2 THEN 0
                WHEN j = s.nlogs AND s.status = 'COMPLETE' THEN 100
                WHEN j = s.nlogs AND s.status <> 'RUNNING' THEN NULL
                ELSE (j - 2) * 95 / (s.nlogs - 2) END AS pct
    FROM seed s CROSS JOIN LATERAL generate_series(1, s.nlogs) AS j
    """,
    """
    INSERT INTO agentexec_activity (agent_id, agent_type, status, latest_completion_percentage,
                                    latest_log, worker, created_at, updated_at)
    SELECT s.agent_id,
           (ARRAY['research_company', 'summarize_numbers', 'write_report'])[1 + s.i % 3],
           s.status,
           CASE WHEN s.status = 'COMPLETE' THEN 100
                WHEN s.status = 'RUNNING' THEN 95
                ELSE (s.nlogs - 3) * 95 / (s.nlogs - 2) END,
           last.message,
           CASE WHEN s.status = 'QUEUED' THEN NULL ELSE 'celery@worker-' || (s.i % 4) END,
           s.created_at,
           last.created_at
    FROM seed s JOIN seed_log last ON last.agent_id = s.agent_id AND last.j = s.nlogs
    ORDER BY s.i
    """,
    """
    INSERT INTO agentexec_activity_log (agent_id, seq, message, status, completion_percentage,
                                        created_at)
    SELECT agent_id, (i::bigint << 20) + j, message, status, pct, created_at
    FROM seed_log ORDER BY i, j
    """,
]


def _engine() -> Any:
    from sqlalchemy import create_engine

    return create_engine(URL)


def seed(activities: int) -> dict[str, Any]:
    """(Re)create the schema and fill it; returns the row counts and how long it took."""
    from sqlalchemy import create_engine, text

    from agentexec.db.models import Base

    t0 = time.perf_counter()
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
    admin.dispose()
    engine = _engine()
    try:
        Base.metadata.create_all(engine)
        with engine.begin() as conn:
            for sql in SEED_SQL:
                conn.execute(text(sql), {"activities": activities})
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM ANALYZE agentexec_activity, agentexec_activity_log")
            )
            counts = {
                table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                for table in ("agentexec_activity", "agentexec_activity_log")
            }
    finally:
        engine.dispose()
    return {"seed_s": round(time.perf_counter() - t0, 2), **counts}


def drop() -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
    admin.dispose()


def measure(n: int, warmup: int = 20) -> dict[str, Any]:
    """p50/p99 of the list page and of a detail with 20 logs, a new Session per call."""
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    import agentexec as ax

    engine = _engine()
    try:
        with engine.connect() as conn:
            total = conn.execute(text("SELECT count(*) FROM agentexec_activity")).scalar_one()
            heavy = [i for i in range(1, total + 1) if i % 8 < 3]
            ids = [
                row[0]
                for row in conn.execute(
                    text("SELECT md5('bench-' || i)::uuid FROM unnest(CAST(:ids AS int[])) AS i"),
                    {"ids": random.Random(4).sample(heavy, min(len(heavy), n + warmup))},
                )
            ]

        def time_calls(call: Any, args: list[Any]) -> list[float]:
            lat = []
            for arg in args:
                t = time.perf_counter()
                with Session(engine) as session:
                    call(session, arg)
                lat.append(1000 * (time.perf_counter() - t))
            return lat[warmup:]

        def list_page(session: Session, _: Any) -> None:
            page = ax.activity.list(session, page=1, page_size=20)
            assert len(page.items) == 20 and page.total == total

        def detail(session: Session, agent_id: Any) -> None:
            found = ax.activity.detail(session, agent_id)
            assert found is not None and len(found.logs) == 20

        list_ms = time_calls(list_page, [None] * (n + warmup))
        detail_ms = time_calls(detail, ids)
    finally:
        engine.dispose()
    out: dict[str, Any] = {"activities": total, "n": n}
    for name, lat in (("list", list_ms), ("detail", detail_ms)):
        out[f"{name}_p50_ms"] = round(statistics.median(lat), 3)
        out[f"{name}_p99_ms"] = round(percentile(lat, 99), 3)
    return out


# --------------------------------------------------------------------------- cases and rows


def setup_case(size: str) -> Case:
    """Seeding, run once per benchmark run before the repetitions."""
    activities = SIZES[size]["activities"]
    return Case("reads.seed", python_module("bench.reads", "seed", "--activities", activities), 600)


def teardown_case() -> Case:
    return Case("reads.drop", python_module("bench.reads", "drop"), 60)


def cases(size: str) -> list[Case]:
    argv = python_module("bench.reads", "measure", "--n", SIZES[size]["n"])
    return [Case("reads.agentexec", argv, 300)]


def rows(results: Results, size: str) -> list[Row]:
    activities = SIZES[size]["activities"]
    out = []
    for name, label, target in (
        ("list", "list page (20 items)", 20.0),
        ("detail", "detail (20 logs)", None),
    ):
        for pct in ("p50", "p99"):
            s = summarize(values(by_run(results, "reads.agentexec", f"{name}_{pct}_ms")))
            row = Row(
                f"4. {label} {pct}, {activities:,} activities / {10 * activities:,} logs",
                "agentexec",
                s.fmt(2, " ms") if s else "failed",
            )
            if target is not None and pct == "p99":
                row.target = f"≤ {target:g} ms" + verdict(s.median if s else None, at_most=target)
            out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_seed = sub.add_parser("seed")
    p_seed.add_argument("--activities", type=int, default=100_000)
    p_measure = sub.add_parser("measure")
    p_measure.add_argument("--n", type=int, default=500)
    sub.add_parser("drop")
    args = parser.parse_args()
    install_sigterm_exit()
    if args.command == "seed":
        emit(seed(args.activities))
    elif args.command == "measure":
        emit(measure(args.n))
    else:
        drop()
        emit({"dropped": SCHEMA})


if __name__ == "__main__":
    main()
