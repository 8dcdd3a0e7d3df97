"""The `agentexec` command: inspect runs, run workers, check a deployment, try the demo.

Each command imports what it needs when it runs, so `agentexec --help` and a health probe
stay fast: the group itself loads only click.
"""

from __future__ import annotations

import click

from agentexec import __version__
from agentexec.cli.beat import beat, schedule
from agentexec.cli.check import check
from agentexec.cli.db import create_tables, db
from agentexec.cli.demo import demo
from agentexec.cli.flower import flower
from agentexec.cli.purge import purge
from agentexec.cli.runs import approve, cancel, list_runs, result, resume, show
from agentexec.cli.tail import tail
from agentexec.cli.worker import project, worker

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="agentexec")
def main() -> None:
    """agentexec: AI agents as Celery background tasks.

    Most commands take -A/--app MODULE, the module that builds your WorkerPool, to use its
    database and tasks; without it they use DATABASE_URL and REDIS_URL.

    \b
    Examples:
      agentexec demo                        research agents in the background, no setup
      agentexec list --status RUNNING       what is running now
      agentexec tail 3f2c...                follow one run until it ends
      agentexec check -A myapp.worker       health probe (exit code 1 on failure)
    """


for command in (
    list_runs, show, tail, cancel, approve, resume, result, purge, worker, project, check, db,
    demo, flower, beat, schedule,
):  # fmt: skip
    main.add_command(command)
main.add_command(create_tables)

__all__ = ["main"]
