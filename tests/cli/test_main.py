"""The command itself: help with examples on every command, and the version."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import click

import agentexec as ax
from agentexec.cli import main
from agentexec.cli.common import STATUSES


def _commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        found[prefix + name] = command
        if isinstance(command, click.Group):
            found |= _commands(command, f"{prefix}{name} ")
    return found


def test_every_command_has_help_with_an_example(cli: Any) -> None:
    commands = _commands(main)
    expected = {"list", "show", "tail", "cancel", "result", "worker", "check", "db upgrade"}
    assert expected <= set(commands)
    for name in commands:
        outcome = cli(*name.split(), "-h")
        assert outcome.exit_code == 0, name
        assert "Example" in outcome.output, name


def test_version(cli: Any) -> None:
    assert cli("--version").output.strip() == f"agentexec, version {ax.__version__}"
    assert cli("-V").exit_code == 0


def test_status_choices_are_the_statuses() -> None:
    assert list(STATUSES) == [status.value for status in ax.Status]


def test_entry_points_run_the_same_command() -> None:
    for module in ("agentexec", "agentexec.cli"):
        out = subprocess.run(
            [sys.executable, "-m", module, "-h"], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0 and "Usage: agentexec" in out.stdout, module


def test_help_loads_neither_the_agents_sdk_nor_sqlalchemy() -> None:
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom agentexec.cli import main\n"
        "CliRunner().invoke(main, ['--help'])\n"
        "print(sorted(m for m in ('agents', 'sqlalchemy', 'celery.app', 'rich') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
