"""Agent progress in Flower: each status report as a Celery task event, `task-progress`.

Flower mirrors Celery's task events. An event type it does not know, `task-<name>`, becomes
the task's state (`PROGRESS`) and its fields update the task: this sends the latest report of
each running agent with `result` = `{"percentage": ..., "message": ...}`, so the task list,
the task page and `GET /api/task/info/<id>` show what the agent is doing. The end of the run
(`task-succeeded`, `task-failed`) replaces both, as usual.

Agents report from the shared event loop, so the events go out from a thread of their own,
on a connection of their own. Reports that come faster than they can be sent are coalesced:
only each agent's latest is sent.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

logger = logging.getLogger(__name__)

#: The Celery event type; Flower shows the task's state as `PROGRESS`.
EVENT_TYPE = "task-progress"


class ProgressEvents:
    """Sends agents' latest status reports as Celery task events, from one thread.

    Args:
        app: the Celery app whose event exchange Flower listens to.
        hostname: the worker's node name, as on its other task events.
    """

    def __init__(self, app: Any, hostname: str | None) -> None:
        self.app = app
        self.hostname = hostname
        self._latest: dict[uuid.UUID, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def report(self, agent_id: uuid.UUID, message: str, percentage: int | None) -> None:
        """Queue a report; never waits on the broker."""
        with self._lock:
            self._latest[agent_id] = {"percentage": percentage, "message": message}
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="agentexec-progress-events", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued, then end the thread."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        with self.app.connection_for_write() as connection:
            dispatcher = self.app.events.Dispatcher(
                connection, hostname=self.hostname, enabled=True
            )
            try:
                while True:
                    self._wake.wait()
                    self._wake.clear()
                    with self._lock:
                        latest, self._latest = self._latest, {}
                    for agent_id, progress in latest.items():
                        try:
                            dispatcher.send(EVENT_TYPE, uuid=str(agent_id), result=progress)
                        except Exception as exc:  # the broker is down: Flower misses one
                            logger.debug("progress event of %s not sent: %s", agent_id, exc)
                    if self._stopping:
                        return
            finally:
                dispatcher.close()
