"""Real worker processes for tests: started, waited on until ready, and always stopped.

The helpers live in `agentexec.processes` (the demo uses them too); this module keeps the
old import path working.
"""

from __future__ import annotations

from agentexec.processes import WorkerProcess, celery_worker_argv, wait_for

__all__ = ["WorkerProcess", "celery_worker_argv", "wait_for"]
