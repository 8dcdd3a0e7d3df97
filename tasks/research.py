"""The integration guide's research agent: the demo's (`agentexec.demo.agent`), loaded by
`celery -A agentexec worker` from this repository."""

from agentexec.demo.agent import ResearchContext, research_company

__all__ = ["ResearchContext", "research_company"]
