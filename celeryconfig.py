"""Celery settings for `celery -A agentexec worker` run from this directory.

agentexec derives the essentials (broker, queues, JSON, pool, concurrency) from `REDIS_URL`
and `AGENTEXEC_*`; set anything here to override them, as in any Celery project.
"""

#: Modules with agent tasks, imported by every worker at start.
imports = ("tasks",)
