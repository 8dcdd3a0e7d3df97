"""`python -m agentexec.cli` is the `agentexec` command."""

from agentexec.cli import main

main(prog_name="agentexec")
