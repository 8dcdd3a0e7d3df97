"""Usage per run: what the model server returned, token for token, and its cost."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
import userapp.durable_tasks  # noqa: F401  (registers the durable agents here too)
from click.testing import CliRunner
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.cli import main
from agentexec.eventlog.event import Event
from agentexec.pricing import Price, _parse
from agentexec.states import EventKind, utcnow
from agentexec.tasks import budgets
from agentexec.testing.openai_server import ScriptedOpenAIServer
from agentexec.testing.plugin import StartWorker, agentexec_flush, record_events
from tests.apps import APP_DIR, APP_ENV
from tests.durable_script import DurableScript, returned_usage

PRICES = {"version": "test-2026-12", "models": {"gpt-4o": {"input": 2.5, "cached_input": 1.25,
                                                           "output": 10.0}}}  # fmt: skip


async def test_usage_equals_what_the_server_returned_with_its_cost(
    agentexec_worker: StartWorker, agentexec_session: Session
) -> None:
    with ScriptedOpenAIServer(DurableScript()) as server:
        env = {**APP_ENV, **server.env(), "OPENAI_AGENTS_DISABLE_TRACING": "1",
               "AGENTEXEC_PRICES": json.dumps(PRICES)}  # fmt: skip
        agentexec_worker("-I", "userapp.durable_tasks", cwd=APP_DIR, env=env)
        runs = [await ax.enqueue("durable_agent", {"steps": n}) for n in (4, 1)]
        for run in runs:
            await ax.get_result(run.agent_id, timeout=30)
        returned = {run.agent_id: returned_usage(server, run.agent_id) for run in runs}
    price = Price(2.5, 1.25, 10.0)
    for run, calls in zip(runs, (5, 2), strict=True):
        usage = returned[run.agent_id]
        assert len(usage) == calls
        agentexec_session.expire_all()
        detail = ax.activity.detail(agentexec_session, run.agent_id)
        assert detail is not None and detail.usage is not None
        recorded = detail.usage
        assert recorded.requests == calls
        assert recorded.input_tokens == sum(u["input_tokens"] for u in usage)
        assert recorded.output_tokens == sum(u["output_tokens"] for u in usage)
        assert recorded.cached_tokens == 0 and recorded.unpriced_requests == 0
        expected = sum(price.cost(u["input_tokens"], 0, u["output_tokens"]) for u in usage)
        assert recorded.cost == pytest.approx(expected)
        assert set(recorded.models) == {"gpt-4o"}
    page = ax.activity.list(agentexec_session)
    listed = {item.agent_id: item.usage for item in page.items}
    assert listed[runs[0].agent_id] is not None and listed[runs[0].agent_id].requests == 5
    by_task = ax.activity.usage(agentexec_session, group_by="task")
    assert by_task["durable_agent"].requests == 7
    by_model = ax.activity.usage(agentexec_session, group_by="model", since=utcnow() - timedelta(1))
    assert by_model["gpt-4o"].requests == 7
    by_day = ax.activity.usage(agentexec_session, group_by="day")
    assert sum(t.requests for t in by_day.values()) == 7
    cli = CliRunner()
    shown = cli.invoke(main, ["show", str(runs[0].agent_id)]).output
    assert "usage    5 calls" in shown and "gpt-4o: 5 calls" in shown and "$" in shown
    listed_out = cli.invoke(main, ["list"]).output
    assert "TOKENS" in listed_out
    await ax.close_redis()


def test_an_unpriced_model_counts_tokens_and_shows_no_cost(
    agentexec_env: dict[str, str], agentexec_session: Session, sqlite_only: None
) -> None:
    agent_id = uuid.uuid4()
    record_events(
        Event(agent_id, ax.Status.QUEUED, "Task queued", kind=EventKind.QUEUED, task="t"),
        Event(agent_id, ax.Status.RUNNING, "", kind=EventKind.USAGE,
              data={"model": "mystery", "requests": 1, "input": 100, "output": 7}),
        Event(agent_id, ax.Status.RUNNING, "", kind=EventKind.USAGE,
              data={"model": "gpt-4o", "requests": 1, "input": 10, "output": 1, "cost": 0.5,
                    "prices": "v1"}),
    )  # fmt: skip
    agentexec_flush()
    detail = ax.activity.detail(agentexec_session, agent_id)
    assert detail is not None and detail.usage is not None
    assert (detail.usage.requests, detail.usage.input_tokens) == (2, 110)
    assert detail.usage.cost == 0.5 and detail.usage.unpriced_requests == 1
    assert detail.usage.models["mystery"].cost is None
    # A usage event moves neither the run's status nor its log.
    assert [log.message for log in detail.logs] == ["Task queued"]
    assert detail.status is ax.Status.QUEUED


def test_price_table_from_json_and_snapshots() -> None:
    table = _parse(json.dumps(PRICES))
    assert table.version == "test-2026-12"
    assert table.price("gpt-4o-2024-08-06") == table.price("gpt-4o") == Price(2.5, 1.25, 10.0)
    assert table.price("gpt-4.1") is None
    assert Price(2.0, 1.0, 8.0).cost(1_000_000, 500_000, 1_000_000) == 2.0 * 0.5 + 0.5 + 8.0
    with pytest.raises(ValueError, match="not a price table"):
        _parse('{"models": {"x": {"input": 1}}}')


async def test_a_budget_stops_the_run_at_a_turn_and_resume_goes_on(
    agentexec_worker: StartWorker, agentexec_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = DurableScript()
    with ScriptedOpenAIServer(script) as server:
        env = {**APP_ENV, **server.env(), "OPENAI_AGENTS_DISABLE_TRACING": "1"}
        agentexec_worker("-I", "userapp.durable_tasks", cwd=APP_DIR, env=env)
        run = await ax.enqueue("durable_agent", {"steps": 4}, max_tokens=1, owner="acme")
        with pytest.raises(ax.TaskFailedError, match=r"budget exceeded: [\d,]+ tokens > 1$"):
            await ax.get_result(run.agent_id, timeout=30)
        assert script.calls[str(run.agent_id)] == 1  # stopped before its second model call
        agentexec_session.expire_all()
        detail = ax.activity.detail(agentexec_session, run.agent_id)
        assert detail is not None and detail.status is ax.Status.ERROR
        assert "budget exceeded" in (detail.latest_log or "")

        # The owner's daily budget is spent: its next run is refused, another owner's is not.
        monkeypatch.setattr(ax.get_settings(), "owner_daily_tokens", 5)
        with pytest.raises(ax.BudgetExceededError, match="owner 'acme' daily budget exceeded"):
            await ax.enqueue("durable_agent", {"steps": 0}, owner="acme")
        other = await ax.enqueue("durable_agent", {"steps": 0}, owner="globex")
        monkeypatch.setattr(ax.get_settings(), "owner_daily_tokens", None)

        assert await ax.resume(run.agent_id, max_tokens=1_000_000)
        result = await ax.get_result(run.agent_id, timeout=30)
        assert result == {"final": "done after 4 steps"}
        assert (await ax.get_result(other.agent_id, timeout=30))["final"] == "done after 0 steps"
    assert script.calls[str(run.agent_id)] == 5  # no model call made twice
    agentexec_session.expire_all()
    detail = ax.activity.detail(agentexec_session, run.agent_id)
    assert detail is not None and detail.usage is not None and detail.usage.requests == 5
    await ax.close_redis()


async def test_an_owners_day_is_counted_by_the_workers_as_its_runs_spend(
    agentexec_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a daily budget set, the first check of the day reads the owner's usage from SQL
    into Redis, and from then on the workers add each call's tokens there: the next check
    sees a run's spending the moment the run ends, without a SQL query."""
    script = DurableScript()
    with ScriptedOpenAIServer(script) as server:
        # The worker has no budget set: only the enqueuing side needs it.
        env = {**APP_ENV, **server.env(), "OPENAI_AGENTS_DISABLE_TRACING": "1"}
        agentexec_worker("-I", "userapp.durable_tasks", cwd=APP_DIR, env=env)
        monkeypatch.setattr(ax.get_settings(), "owner_daily_tokens", 1_000_000)
        assert budgets.spent_today("initech") == (0, 0.0)  # seeded: nothing spent today
        run = await ax.enqueue("durable_agent", {"steps": 2}, owner="initech")
        await ax.get_result(run.agent_id, timeout=30)
        returned = returned_usage(server, run.agent_id)
    spent = sum(u["input_tokens"] + u["output_tokens"] for u in returned)
    assert len(returned) == 3 and spent > 0
    assert budgets.spent_today("initech")[0] == spent
    monkeypatch.setattr(ax.get_settings(), "owner_daily_tokens", spent)
    with pytest.raises(ax.BudgetExceededError, match="owner 'initech' daily budget exceeded"):
        await ax.enqueue("durable_agent", {"steps": 0}, owner="initech")
    await ax.close_redis()
