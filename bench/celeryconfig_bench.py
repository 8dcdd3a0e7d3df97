"""Celery config module of the benchmark's agentexec workers (`CELERY_CONFIG_MODULE`).

Empty on purpose: the repository's `celeryconfig.py` imports `tasks/`, which the benchmark
does not need. Workers load `bench.agentexec_tasks` with `-I`, and everything else comes
from agentexec's defaults, exactly as a user's worker would get them.
"""
