"""The demo's live table: one row per agent, updated from the event log."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from agentexec.eventlog.event import Event

#: How each status is shown.
STYLES = {
    "QUEUED": "cyan",
    "RUNNING": "yellow",
    "COMPLETE": "green",
    "ERROR": "red",
    "CANCELED": "magenta",
}
TERMINAL = {"COMPLETE", "ERROR", "CANCELED"}


@dataclass
class Row:
    """What the table shows of one agent."""

    name: str
    status: str = "QUEUED"
    percentage: int = 0
    message: str = "Task queued"
    priority: str = "LOW"


class Board:
    """The agents of one demo run, and their latest state.

    Args:
        agents: (agent id, display name) pairs, in the order to show them.
    """

    def __init__(self, agents: Sequence[tuple[uuid.UUID, str]]) -> None:
        self.rows = {agent_id: Row(name) for agent_id, name in agents}

    @property
    def agent_ids(self) -> set[uuid.UUID]:
        """The agents on the board."""
        return set(self.rows)

    @property
    def finished(self) -> int:
        """How many agents have ended."""
        return sum(row.status in TERMINAL for row in self.rows.values())

    @property
    def done(self) -> bool:
        """Whether every agent has ended."""
        return self.finished == len(self.rows)

    def priority(self, agent_id: uuid.UUID, priority: str) -> None:
        """Show `agent_id` with this priority."""
        self.rows[agent_id].priority = priority

    def apply(self, event: Event) -> None:
        """Show what `event` says, unless its agent has already ended."""
        row = self.rows.get(event.agent_id)
        if row is None or row.status in TERMINAL:
            return
        row.status = event.status.value
        row.message = event.message
        if event.percentage is not None:
            row.percentage = event.percentage
        if row.status == "COMPLETE":
            row.percentage = 100

    def render(self, elapsed: float) -> Table:
        """The live table."""
        table = Table(
            title=f"{self.finished}/{len(self.rows)} agents finished · {elapsed:.1f}s",
            title_justify="left",
            header_style="bold",
        )
        table.add_column("agent", no_wrap=True)
        table.add_column("queue", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("progress", no_wrap=True, width=24)
        table.add_column("%", justify="right", no_wrap=True)
        table.add_column("last message", overflow="ellipsis", no_wrap=True, max_width=60)
        for row in self.rows.values():
            style = STYLES.get(row.status, "white")
            table.add_row(
                row.name,
                row.priority,
                Text(row.status, style=style),
                ProgressBar(total=100, completed=row.percentage, width=24),
                f"{row.percentage}%",
                row.message,
            )
        return table

    def summary(self, results: Mapping[uuid.UUID, Any], elapsed: float) -> Group:
        """The end: each agent's outcome, from the result backend."""
        table = Table(title="Results (from the Redis result backend)", title_justify="left")
        table.add_column("agent", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("findings")
        for agent_id, row in self.rows.items():
            outcome = results.get(agent_id)
            if isinstance(outcome, Exception):
                text = str(outcome)
            elif isinstance(outcome, dict):
                text = str(outcome.get("findings", outcome))
            else:
                text = str(outcome)
            table.add_row(row.name, Text(row.status, style=STYLES.get(row.status, "white")), text)
        return Group(table)
