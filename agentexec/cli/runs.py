"""Commands about runs: `list`, `show`, `cancel`, `approve`, `resume` and `result` (and
`tail`, in its module)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import click

from agentexec.cli.common import (
    STATUSES,
    activity_engine,
    app_option,
    clock,
    console,
    id_argument,
    json_option,
    load_app,
    owner_option,
    percent,
    shown,
    styled,
)


@click.command("list")
@app_option
@click.option(
    "-s",
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(STATUSES, case_sensitive=False),
    help="Only runs with this status (repeat for several).",
)
@click.option("-t", "--task", "tasks", multiple=True, help="Only runs of this task (repeatable).")
@owner_option
@click.option(
    "-n", "--limit", default=20, show_default=True, type=click.IntRange(1, 10_000),
    help="How many runs, newest first.",
)  # fmt: skip
@json_option
def list_runs(
    app_module: str | None,
    statuses: tuple[str, ...],
    tasks: tuple[str, ...],
    owner: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List runs, newest first.

    \b
    Examples:
      agentexec list
      agentexec list -s RUNNING -s QUEUED -A myapp.worker
      agentexec list --owner acme
      agentexec list --task research_company --json | jq -r '.[].agent_id'
    """
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from agentexec.client.schemas import ActivityListItem, UsageTotals
    from agentexec.client.usage import run_usage
    from agentexec.db.models import Activity

    load_app(app_module)
    query = select(Activity).order_by(Activity.created_at.desc(), Activity.agent_id.desc())
    if statuses:
        query = query.where(Activity.status.in_([s.upper() for s in statuses]))
    if tasks:
        query = query.where(Activity.agent_type.in_(tasks))
    if owner is not None:
        query = query.where(Activity.owner == owner)
    with Session(activity_engine()) as session:
        rows = [ActivityListItem.model_validate(r) for r in session.scalars(query.limit(limit))]
        spent = run_usage(session, [row.agent_id for row in rows])
    for row in rows:
        if row.agent_id in spent:
            row.usage = UsageTotals.model_validate(spent[row.agent_id].model_dump())
    if as_json:
        click.echo(json.dumps([row.model_dump(mode="json") for row in rows], indent=2))
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("ID", no_wrap=True, min_width=36)
    table.add_column("TASK", no_wrap=True, overflow="ellipsis")
    table.add_column("STATUS", no_wrap=True, min_width=8)
    table.add_column("%", no_wrap=True, justify="right", min_width=4)
    table.add_column("UPDATED", no_wrap=True, min_width=8)
    table.add_column("TOKENS", no_wrap=True, justify="right")
    table.add_column("LAST MESSAGE", no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(
            str(row.agent_id),
            shown(row.agent_type),
            styled(row.status.value),
            percent(row.latest_completion_percentage),
            clock(row.updated_at),
            f"{row.usage.total_tokens:,}" if row.usage else "",
            shown(row.latest_log),
        )
    out = console()
    out.print(table if rows else "no runs")


@click.command()
@id_argument
@app_option
@owner_option
@json_option
def show(agent_id: uuid.UUID, app_module: str | None, owner: str | None, as_json: bool) -> None:
    """Show one run and its log, oldest entry first.

    \b
    Example:
      agentexec show 3f2c9a4e-... -A myapp.worker
    """
    from sqlalchemy.orm import Session

    from agentexec.client.activity import detail

    load_app(app_module)
    with Session(activity_engine()) as session:
        activity = detail(session, agent_id, owner=owner)
    if activity is None:
        raise click.ClickException(f"no run {agent_id}")
    if as_json:
        click.echo(json.dumps(activity.model_dump(mode="json"), indent=2))
        return
    from rich.table import Table

    out = console()
    out.print(f"[bold]{activity.agent_id}[/bold]  {shown(activity.agent_type)}")
    if activity.owner is not None:
        out.print(f"owner    {shown(activity.owner)}")
    out.print(
        f"status   {styled(activity.status.value)}  "
        f"{percent(activity.latest_completion_percentage)}"
    )
    out.print(f"created  {activity.created_at.isoformat()}")
    out.print(f"updated  {activity.updated_at.isoformat()}")
    if activity.usage is not None and activity.usage.requests:
        out.print(f"usage    {usage_text(activity.usage)}")
        for model, part in sorted(activity.usage.models.items()):
            out.print(f"         {shown(model)}: {usage_text(part)}")
    out.print()
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("TIME", "STATUS", "%", "MESSAGE"):
        table.add_column(column, justify="right" if column == "%" else "left")
    for log in activity.logs:
        table.add_row(
            clock(log.created_at),
            styled(log.status.value),
            percent(log.completion_percentage),
            shown(log.message),
        )
    out.print(table)
    if activity.approvals:
        out.print("\n[bold]approvals[/bold]")
        for asked in activity.approvals:
            if asked.approved is None:
                verdict = "[bold]pending[/bold]"
            else:
                verdict = "approved" if asked.approved else "rejected"
                verdict += f" by {shown(asked.decided_by)}" if asked.decided_by else ""
            out.print(
                f"  {shown(asked.call_id)}  {shown(asked.tool)}({shown(asked.arguments)})  "
                f"{verdict}"
            )
            if asked.decision_message:
                out.print(f"    {shown(asked.decision_message)}")
    if activity.children:
        out.print("\n[bold]runs[/bold]")
        for child in activity.children:
            depth = "  " * child.position.count(".")
            status = styled(child.status.value) if child.status else "-"
            out.print(
                f"  {depth}{shown(child.position)}  {shown(child.step)}  {child.agent_id}  "
                f"{shown(child.task or '')}  {status}  {shown(child.latest_log or '')}"
            )


def usage_text(usage: Any) -> str:
    """`3 calls, 1,234 in (200 cached) / 56 out (10 reasoning) tokens, $0.0123`."""
    text = f"{usage.requests} call{'s' if usage.requests != 1 else ''}, {usage.input_tokens:,} in"
    text += f" ({usage.cached_tokens:,} cached)" if usage.cached_tokens else ""
    text += f" / {usage.output_tokens:,} out"
    text += f" ({usage.reasoning_tokens:,} reasoning)" if usage.reasoning_tokens else ""
    text += " tokens"
    if usage.cost is not None:
        text += f", ${usage.cost:.4f}"
    if usage.unpriced_requests:
        text += f" ({usage.unpriced_requests} calls without a price)"
    return text


@click.command()
@id_argument
@click.argument("call_id", required=False)
@app_option
@click.option("--reject", "rejected", is_flag=True, help="Reject the call instead.")
@click.option("--message", default=None, help="A note; for a rejection, what the model is told.")
@owner_option
def approve(
    agent_id: uuid.UUID,
    call_id: str | None,
    app_module: str | None,
    rejected: bool,
    message: str | None,
    owner: str | None,
) -> None:
    """Approve (or --reject) a tool call a WAITING run waits on.

    CALL_ID may be left out when the run waits on one call only (`agentexec show ID` lists
    them). Once every call is decided, the run is queued again and goes on.

    \b
    Examples:
      agentexec approve 3f2c9a4e-...
      agentexec approve 3f2c9a4e-... call_8Yx --reject --message "not to that address"
    """
    import asyncio

    from agentexec.client.approvals import approve as approve_call
    from agentexec.client.approvals import reject as reject_call
    from agentexec.exceptions import ApprovalError

    load_app(app_module)
    decide = reject_call if rejected else approve_call
    try:
        decided = asyncio.run(decide(agent_id, call_id, message=message, owner=owner))
    except ApprovalError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyError:
        raise click.ClickException(f"no run {agent_id}") from None
    if not decided:
        raise click.ClickException(f"{agent_id} waits for no such decision (decided already?)")
    click.echo(f"{'rejected' if rejected else 'approved'} {call_id or 'the pending call'} "
               f"of {agent_id}")  # fmt: skip


@click.command()
@id_argument
@app_option
@click.option(
    "--max-turns", type=click.IntRange(min=1), default=None,
    help="Turns it may take from here (default: its own limit).",
)  # fmt: skip
def resume(agent_id: uuid.UUID, app_module: str | None, max_turns: int | None) -> None:
    """Continue a run that ended ERROR at a turn boundary (its turn limit, say) from its
    last checkpoint.

    \b
    Example:
      agentexec resume 3f2c9a4e-... --max-turns 10
    """
    import asyncio

    from agentexec.client.approvals import resume as resume_run
    from agentexec.exceptions import NotResumableError

    load_app(app_module)
    try:
        asyncio.run(resume_run(agent_id, max_turns=max_turns))
    except NotResumableError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyError:
        raise click.ClickException(f"no run {agent_id}") from None
    click.echo(f"queued {agent_id} again to resume")


@click.command()
@id_argument
@app_option
@click.option(
    "--reason", default="Canceled from the command line", show_default=True,
    help="Why: the run's last log line and its result's reason.",
)  # fmt: skip
def cancel(agent_id: uuid.UUID, app_module: str | None, reason: str) -> None:
    """Cancel a run: a queued one never starts, a running one is stopped.

    \b
    Example:
      agentexec cancel 3f2c9a4e-... -A myapp.worker --reason "wrong company"
    """
    import asyncio

    from agentexec.client.cancel import cancel as cancel_run

    load_app(app_module)
    try:
        canceled = asyncio.run(cancel_run(agent_id, reason=reason))
    except KeyError:
        raise click.ClickException(f"no run {agent_id}") from None
    if canceled:
        click.echo(f"canceled {agent_id}")
    else:
        click.echo(f"{agent_id} had already ended")


@click.command()
@id_argument
@app_option
@click.option(
    "--timeout", default=30.0, show_default=True, type=click.FloatRange(min=0),
    help="Seconds to wait for the run to end.",
)  # fmt: skip
def result(agent_id: uuid.UUID, app_module: str | None, timeout: float) -> None:
    """Wait for a run's return value and print it as JSON.

    Exits 1 when the run failed or was canceled, is unknown, or does not end in time.

    \b
    Example:
      agentexec result 3f2c9a4e-... --timeout 300 | jq .findings
    """
    import asyncio

    from agentexec.exceptions import AgentExecError
    from agentexec.tasks.results import close_redis, get_result

    load_app(app_module)

    async def wait() -> Any:
        try:
            return await get_result(agent_id, timeout=timeout)
        finally:
            await close_redis()

    try:
        value = asyncio.run(wait())
    except KeyError:
        raise click.ClickException(f"no run {agent_id}") from None
    except TimeoutError:
        raise click.ClickException(f"{agent_id} has not ended within {timeout}s") from None
    except AgentExecError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(value, indent=2))
