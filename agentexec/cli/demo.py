"""`agentexec demo`: research agents in the background, on a live table."""

from __future__ import annotations

import sys

import click


@click.command()
@click.option(
    "-n", "--agents", default=6, show_default=True, type=click.IntRange(1, 500),
    help="How many agents to run.",
)  # fmt: skip
@click.option("--flower", is_flag=True, help="Also start Flower (on 127.0.0.1) and keep it up.")
@click.option(
    "--flower-port", default=5555, show_default=True, type=click.IntRange(1, 65535),
    help="Flower's port.",
)  # fmt: skip
@click.option(
    "--timeout", default=300.0, show_default=True, type=click.FloatRange(min=1),
    help="Give up when the agents have not all finished after this many seconds.",
)  # fmt: skip
def demo(agents: int, flower: bool, flower_port: int, timeout: float) -> None:
    """Run research agents in the background and watch them (nothing to set up).

    Without a reachable REDIS_URL it starts an embedded Redis; activity goes to a temporary
    SQLite file (or DATABASE_URL); without OPENAI_API_KEY the agents use a scripted offline
    model. Every process it starts is stopped when it ends, Ctrl+C included.

    \b
    Examples:
      agentexec demo
      agentexec demo --agents 20 --flower --flower-port 5556
    """
    from agentexec.demo import run

    sys.exit(run(agents=agents, flower_port=flower_port if flower else None, timeout=timeout))
