"""Helpers for testing the `agentexec` command: the click runner, and runs on a live worker."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from click.testing import CliRunner, Result

import agentexec as ax
from agentexec.cli import main


@pytest.fixture
def cli() -> Any:
    """`cli("list", "--json")` runs the command in this process, like a user would."""
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(main, list(args), catch_exceptions=False)

    return invoke


def enqueue(numbers: list[float], step_seconds: float = 0.0) -> uuid.UUID:
    """Enqueue `summarize_numbers` (this repository's example task) and return its id."""
    import tasks  # noqa: F401  (registers the example tasks in this process)

    async def run() -> uuid.UUID:
        context = {"numbers": numbers, "step_seconds": step_seconds}
        return (await ax.enqueue("summarize_numbers", context)).agent_id

    return asyncio.run(run())
