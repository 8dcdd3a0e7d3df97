"""Example agent tasks that `celery -A agentexec worker` loads from this repository."""

from tasks.examples import pool, summarize_numbers

__all__ = ["pool", "summarize_numbers"]
