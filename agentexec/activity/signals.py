"""agentexec's own signal: an agent reports what it is doing."""

from __future__ import annotations

from celery.utils.dispatch import Signal

#: Sent with `agent_id`, `message`, `percentage` (int or None) and `status` (a Status).
#: The activity recorder turns each one into a log row; connect your own receivers to
#: stream progress elsewhere. Receivers run on the agent's event loop and must not block.
status_reported = Signal(name="agentexec.status_reported")
