"""The Celery app: JSON only, two priority queues, at-least-once, no connection at import."""

from __future__ import annotations

import subprocess
import sys

import agentexec as ax
from agentexec.config import Settings
from agentexec.tasks.config import celery_defaults


def test_defaults_are_json_only_and_late_ack() -> None:
    conf = celery_defaults(Settings(_env_file=None))
    assert conf["accept_content"] == ["json"]
    assert conf["result_accept_content"] == ["json"]
    assert conf["task_serializer"] == conf["result_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["broker_transport_options"]["queue_order_strategy"] == "priority"


def test_high_queue_is_consumed_first() -> None:
    queues = celery_defaults(Settings(_env_file=None))["task_queues"]
    assert [q.name for q in queues] == ["agentexec.high", "agentexec.low"]


def test_app_is_what_celery_finds_for_dash_a_agentexec() -> None:
    from celery.app.utils import find_app

    assert find_app("agentexec") is ax.app


def test_import_connects_to_nothing() -> None:
    # An unreachable broker and database: importing and building a pool must still work.
    code = (
        "import agentexec as ax\n"
        "pool = ax.WorkerPool(database_url='postgresql+psycopg://nobody@127.0.0.1:1/none')\n"
        "@pool.task('t')\n"
        "async def t(agent_id, context: ax.Settings) -> dict: return {}\n"
        "print(ax.app.conf.broker_url)\n"
    )
    env = {"REDIS_URL": "redis://127.0.0.1:1/0", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "redis://127.0.0.1:1/0"


def test_unacknowledged_messages_are_kept_per_queue_prefix() -> None:
    """A worker restores only its own deployment's unacknowledged runs (with its visibility
    timeout), never those of another queue prefix sharing the Redis db."""
    options = [
        celery_defaults(Settings(_env_file=None, queue_prefix=p))["broker_transport_options"]
        for p in ("one", "two")
    ]
    keys = ("unacked_key", "unacked_index_key", "unacked_mutex_key")
    assert [options[0][k] for k in keys] == [
        "one.unacked",
        "one.unacked_index",
        "one.unacked_mutex",
    ]
    assert not {options[0][k] for k in keys} & {options[1][k] for k in keys}
