"""Apps the tests run real workers on: `plainapp/userapp` is a user's project that imports
agentexec (`userapp.worker` builds a WorkerPool; `userapp.agent_tasks` declares agents)."""

from __future__ import annotations

import sys
from pathlib import Path

APP_DIR = Path(__file__).parent / "plainapp"
#: The environment a worker needs to import `userapp`.
APP_ENV = {"PYTHONPATH": str(APP_DIR)}

if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))
