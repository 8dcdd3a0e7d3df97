"""Every Redis key and stream name agentexec uses, in one place.

All of them live in the broker's Redis (`REDIS_URL`). Keys of one deployment carry its queue
prefix (`AGENTEXEC_QUEUE_PREFIX`; `get_settings().keys`), so deployments sharing a Redis
database never see each other's runs. The exceptions are keyed by run id, which is unique
anyway, and are read by every worker on the Redis, like Celery's result keys: the reason a
run was canceled with.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

#: Consumer group of the SQL projectors on the event log.
PROJECTOR_GROUP = "agentexec-projector"


def cancel_reason(agent_id: str) -> str:
    """String: the reason `ax.cancel` gave for a run."""
    return f"agentexec.cancel-reason.{agent_id}"


@dataclass(frozen=True)
class Keys:
    """The keys of one queue prefix: `get_settings().keys` for the current one."""

    prefix: str

    @staticmethod
    @functools.cache
    def of(prefix: str) -> Keys:
        """The keys of `prefix` (one object per prefix)."""
        return Keys(prefix)

    def _key(self, *parts: str) -> str:
        return ".".join((self.prefix, *parts))

    @property
    def high_queue(self) -> str:
        """List: the HIGH priority queue (kombu adds `\\x06\\x16<n>` keys per priority step)."""
        return self._key("high")

    @property
    def low_queue(self) -> str:
        """List: the LOW priority queue."""
        return self._key("low")

    @property
    def events(self) -> str:
        """Stream: the event log."""
        return self._key("events")

    @property
    def unacked(self) -> str:
        """Hash: kombu's unacknowledged messages, by delivery tag."""
        return self._key("unacked")

    @property
    def unacked_index(self) -> str:
        """Sorted set: when each unacknowledged message was last seen alive (heartbeats)."""
        return self._key("unacked_index")

    @property
    def unacked_mutex(self) -> str:
        """String: kombu's lock while it restores unacknowledged messages."""
        return self._key("unacked_mutex")

    @property
    def messages(self) -> str:
        """Hash: a copy of each published message until it is acknowledged (`queue\\nbody`)."""
        return self._key("messages")

    @property
    def dead(self) -> str:
        """List: messages no worker could read, newest first (the last 10,000)."""
        return self._key("dead")

    @property
    def revoked(self) -> str:
        """Sorted set: revoked run ids, scored by when, for workers that start later."""
        return self._key("revoked")

    @property
    def workers(self) -> str:
        """Hash: each live worker's node name and its last heartbeat (a Unix time)."""
        return self._key("workers")

    def held(self, worker: str) -> str:
        """Set: the runs a worker holds (running, reserved or waiting for an ETA)."""
        return self._key("held", worker)

    def deliveries(self, agent_id: str, retries: int, resumes: int = 0) -> str:
        """String: how often one attempt of a run was delivered (an approval or `ax.resume`
        starts a new count)."""
        attempt = f"{retries}" if not resumes else f"{retries}r{resumes}"
        return self._key("deliveries", agent_id, attempt)

    def checkpoint(self, agent_id: str) -> str:
        """Hash: a durable run's checkpoint, its pending approvals and how to queue it again."""
        return self._key("checkpoint", agent_id)

    def slots(self, key: str) -> str:
        """Sorted set: the runs holding a slot of a concurrency key, scored by lease end."""
        return self._key("slots", key)

    def parked(self, key: str) -> str:
        """List: runs waiting for a slot of a concurrency key, oldest first."""
        return self._key("parked", key)

    @property
    def parked_keys(self) -> str:
        """Set: the concurrency keys with parked runs."""
        return self._key("parked-keys")

    def rate_bucket(self, kind: str, name: str) -> str:
        """String: when a rate limit's bucket is next free (requests or tokens of a model, or
        starts of a task), as a Unix time."""
        return self._key("rate", kind, name)

    def owner_spent(self, owner: str, day: str) -> str:
        """Hash: an owner's tokens and cost on one UTC day (`YYYY-MM-DD`), for its daily
        budget."""
        return self._key("spent", day, owner)

    def composed(self, agent_id: str) -> str:
        """Hash: a pipeline run's state: its name, owner, whether it ended, its children."""
        return self._key("composed", agent_id)

    def step_output(self, agent_id: str, step: int) -> str:
        """String: a pipeline step's output (JSON), kept so a step's body never runs twice."""
        return self._key("composed", agent_id, "out", str(step))

    def join(self, agent_id: str, step: int) -> str:
        """Hash: the results of a step's fan-out children, by position, until all are in."""
        return self._key("composed", agent_id, "join", str(step))

    @property
    def waiting(self) -> str:
        """Sorted set: runs waiting for approvals, scored by when their wait expires."""
        return self._key("waiting")

    @property
    def reaper_lock(self) -> str:
        """String: held by the one worker sweeping for lost runs."""
        return self._key("reaper", "lock")

    @property
    def reaper_suspects(self) -> str:
        """Hash: runs the reaper found without a message, and when (confirmed a sweep later)."""
        return self._key("reaper", "suspects")
