"""Agent runners: the bridge between an agent framework and agentexec's activity log, and
offline models (`offline`) for running agents without a key or a network."""

from agentexec.runners.base import BaseAgentRunner, RunnerPrompts
from agentexec.runners.openai import OpenAIRunner, OpenAITools

__all__ = ["BaseAgentRunner", "OpenAIRunner", "OpenAITools", "RunnerPrompts"]
