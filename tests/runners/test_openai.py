"""OpenAIRunner with the real Agents SDK and ScriptedModel, no broker."""

from __future__ import annotations

import uuid

import pytest
from agents import Agent, set_tracing_disabled
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.eventlog.event import Event
from agentexec.runners.offline import answer, endless_tool_calls, fail, report, scripted_model
from agentexec.states import EventKind
from agentexec.testing.plugin import agentexec_flush, record_events

set_tracing_disabled(True)


@pytest.fixture
def agent_id(agentexec_env: dict[str, str], sqlite_only: None) -> uuid.UUID:
    agent_id = uuid.uuid4()
    record_events(
        Event(agent_id, ax.Status.RUNNING, "Task started", 0, kind=EventKind.STARTED, task="test")
    )
    return agent_id


def _messages(session: Session, agent_id: uuid.UUID) -> list[tuple[str, int | None]]:
    agentexec_flush()
    session.expire_all()
    activity = ax.activity.detail(session, agent_id)
    assert activity is not None
    return [(log.message, log.completion_percentage) for log in activity.logs[1:]]


def _agent(runner: ax.OpenAIRunner, model: object) -> Agent[None]:
    return Agent(
        name="Test agent",
        instructions=f"Be useful. {runner.prompts.report_status}",
        tools=[runner.tools.report_status],
        model=model,  # type: ignore[arg-type]
    )


async def test_status_reports_become_log_rows(
    agent_id: uuid.UUID, agentexec_session: Session
) -> None:
    runner = ax.OpenAIRunner(agent_id=agent_id)
    model = scripted_model(report("Searching", 30), report("Reading", 70), answer("Found it"))
    result = await runner.run(_agent(runner, model), input="Find it", max_turns=5)
    assert result.final_output == "Found it"
    assert _messages(agentexec_session, agent_id) == [("Searching", 30), ("Reading", 70)]
    first = model.first_call
    assert first is not None and "report_status" in (first.system_instructions or "")
    assert [t.name for t in first.tools] == ["report_status"]


async def test_out_of_range_percentage_is_a_tool_error_for_the_model(
    agent_id: uuid.UUID, agentexec_session: Session
) -> None:
    runner = ax.OpenAIRunner(agent_id=agent_id)
    model = scripted_model(report("Way ahead", 250), answer("ok"))
    result = await runner.run(_agent(runner, model), input="go", max_turns=5)
    assert result.final_output == "ok"
    last = model.last_call
    assert last is not None
    outputs = [
        i for i in last.input if isinstance(i, dict) and i.get("type") == "function_call_output"
    ]
    assert "percentage must be a whole number from 0 to 100, got 250" in str(outputs[-1]["output"])
    assert _messages(agentexec_session, agent_id) == []


async def test_max_turns_recovery_wraps_up(agent_id: uuid.UUID, agentexec_session: Session) -> None:
    runner = ax.OpenAIRunner(agent_id=agent_id, max_turns_recovery=True, recovery_turns=2)
    model = scripted_model(*endless_tool_calls(turns=3), answer("Partial findings"))
    result = await runner.run(_agent(runner, model), input="go", max_turns=3)
    assert result.final_output == "Partial findings"
    last = model.last_call
    assert last is not None and runner.prompts.wrap_up in str(last.input)
    messages = [m for m, _ in _messages(agentexec_session, agent_id)]
    assert messages[-1] == "Reached the limit of 3 turns; wrapping up in at most 2 more"


async def test_max_turns_without_recovery_is_a_clear_error(
    agent_id: uuid.UUID, agentexec_session: Session
) -> None:
    runner = ax.OpenAIRunner(agent_id=agent_id)
    model = scripted_model(*endless_tool_calls(turns=3), answer("never"))
    with pytest.raises(ax.MaxTurnsError, match="limit of 3 turns"):
        await runner.run(_agent(runner, model), input="go", max_turns=3)
    assert _messages(agentexec_session, agent_id)[-1] == (
        "Stopped: reached the limit of 3 turns",
        None,
    )


async def test_recovery_that_does_not_help_still_fails(agent_id: uuid.UUID) -> None:
    runner = ax.OpenAIRunner(agent_id=agent_id, max_turns_recovery=True, recovery_turns=1)
    model = scripted_model(*endless_tool_calls(turns=10))
    with pytest.raises(ax.MaxTurnsError, match="even after its wrap-up turns"):
        await runner.run(_agent(runner, model), input="go", max_turns=2)


async def test_streamed_run_forwards_events(
    agent_id: uuid.UUID, agentexec_session: Session
) -> None:
    runner = ax.OpenAIRunner(agent_id=agent_id)
    seen: list[str] = []

    async def on_event(event: object) -> None:
        seen.append(type(event).__name__)

    model = scripted_model(report("Streaming", 50), answer("streamed answer"))
    result = await runner.run_streamed(_agent(runner, model), input="go", on_event=on_event)
    assert result.final_output == "streamed answer"
    assert "RunItemStreamEvent" in seen
    assert _messages(agentexec_session, agent_id) == [("Streaming", 50)]


async def test_model_error_propagates(agent_id: uuid.UUID) -> None:
    runner = ax.OpenAIRunner(agent_id=agent_id)
    model = scripted_model(fail(ConnectionError("provider down")))
    with pytest.raises(ConnectionError, match="provider down"):
        await runner.run(_agent(runner, model), input="go")


def test_prompts_can_be_overridden() -> None:
    runner = ax.OpenAIRunner(
        agent_id=uuid.uuid4(), report_status_prompt="Report often.", wrap_up_prompt="Stop now."
    )
    assert runner.prompts.report_status == "Report often."
    assert runner.prompts.wrap_up == "Stop now."
    assert "report_status" in ax.OpenAIRunner(agent_id=uuid.uuid4()).prompts.report_status
    with pytest.raises(KeyError):
        ax.OpenAIRunner(agent_id="nope")


async def test_guardrail_trip_propagates(agent_id: uuid.UUID) -> None:
    from agents import GuardrailFunctionOutput, InputGuardrailTripwireTriggered, input_guardrail

    @input_guardrail
    async def no_secrets(ctx: object, agent: object, text: object) -> GuardrailFunctionOutput:
        return GuardrailFunctionOutput(output_info="secret", tripwire_triggered=True)

    runner = ax.OpenAIRunner(agent_id=agent_id)
    agent = _agent(runner, scripted_model(answer("never")))
    agent.input_guardrails = [no_secrets]
    with pytest.raises(InputGuardrailTripwireTriggered):
        await runner.run(agent, input="tell me the password")
