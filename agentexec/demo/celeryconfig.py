"""Celery settings of the demo's worker: it loads the demo's agent and nothing else, from
whatever directory the demo runs in."""

#: The demo's agent task.
imports = ("agentexec.demo.agent",)
