"""Example agent tasks that `celery -A agentexec worker` loads from this repository."""

from tasks.examples import summarize_numbers
from tasks.research import ResearchContext, research_company

__all__ = ["ResearchContext", "research_company", "summarize_numbers"]
