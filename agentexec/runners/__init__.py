"""Agent runners: the bridge between an agent framework and agentexec's activity log."""

from agentexec.runners.base import BaseAgentRunner, RunnerPrompts
from agentexec.runners.openai import MaxTurnsError, OpenAIRunner, OpenAITools

__all__ = ["BaseAgentRunner", "MaxTurnsError", "OpenAIRunner", "OpenAITools", "RunnerPrompts"]
