"""The projector: applies the event log to the SQL activity tables.

Projectors read the stream through one consumer group, so each event goes to one of them.
A projector applies a batch in one transaction and acknowledges it only after the commit.

- While the database is down, it keeps its batch and retries; everything newer waits in the
  stream. It logs one warning when the outage starts and one line when it has caught up.
- Its own unacknowledged events stay claimed while it lives (it touches them while it
  retries). Events left by a projector that died are taken over by another after
  `AGENTEXEC_PROJECTOR_CLAIM_IDLE` seconds.
- Applying is idempotent and order-safe (see `agentexec.db.projection`), so a redelivered
  event or two projectors sharing a run do no harm.
- It trims the stream to `AGENTEXEC_EVENTS_RETENTION` / `AGENTEXEC_EVENTS_MAXLEN`, never
  below the oldest event the group has not acknowledged (`agentexec.eventlog.position`).

Every worker process runs one by default; `agentexec project` runs one on its own.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from agentexec.config import get_settings
from agentexec.db import engines, projection
from agentexec.eventlog.event import Event, seq_of
from agentexec.eventlog.log import EventLog
from agentexec.eventlog.position import TRIM
from agentexec.eventlog.reading import decode
from agentexec.exceptions import ActivityStoreError
from agentexec.keys import PROJECTOR_GROUP

logger = logging.getLogger(__name__)

#: Events per transaction.
BATCH = 500
#: Milliseconds a read waits for new events.
_BLOCK_MS = 1_000
#: Seconds a projector waits after a partial batch, for more events to gather.
_LINGER = 0.05
#: Seconds between trims of the stream.
_TRIM_INTERVAL = 10.0
#: Longest pause between attempts while the database or Redis is unreachable.
_MAX_BACKOFF = 2.0
#: Seconds after which a consumer with nothing pending is removed from the group.
_FORGET_IDLE = 3_600


class Projector:
    """A thread (or, with `run`, the calling thread) that projects the event log into SQL.

    Args:
        engine: returns the engine of the activity tables.
        log: the event log.
        outage: shared with the process's other writers, to log an outage once.
        name: this consumer's name in the group; unique per process.
        skip: whether an event (by its position) was already committed by this process.
    """

    def __init__(
        self,
        engine: Callable[[], Engine],
        log: EventLog,
        outage: engines.Outage | None = None,
        name: str | None = None,
        skip: Callable[[int | None], bool] | None = None,
    ) -> None:
        self._engine = engine
        self._skip = skip or (lambda seq: False)
        self.log = log
        self.outage = outage or engines.Outage()
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._trim_script: Any = None
        self._key = ""
        #: When the outage this projector is catching up from began (0: none).
        self._behind_since = 0.0
        self._applied_before = 0
        self._backlog = False
        self._redis_down = False
        #: Events applied since start, for tests and `agentexec project`.
        self.applied = 0

    def start(self) -> Projector:
        """Run in a daemon thread."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self.run, name="agentexec-projector", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in hand (if the database answers) and end the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run(self) -> None:
        """Project until `stop()`."""
        batch: list[tuple[bytes, Event | None]] = []
        next_claim = next_trim = 0.0
        delay = 0.05
        while not self._stop.is_set():
            try:
                if not batch:
                    now = time.monotonic()
                    if now >= next_claim:
                        batch = self._claim()
                        next_claim = now + get_settings().projector_claim_idle / 2
                    if not batch:
                        batch = self._read()
                        self._caught_up()
                    if not batch:
                        continue
                if not self._apply(batch):
                    self._touch(batch)
                    self._stop.wait(delay)
                    delay = min(delay * 2, _MAX_BACKOFF)
                    continue
                delay = 0.05
                self._ack(batch)
                if len(batch) < BATCH:
                    # Let more events gather: a transaction costs about the same for one row
                    # as for a hundred, and nobody waits on the projection (watchers read
                    # the stream, the publish path and the ends of runs write themselves).
                    self._stop.wait(_LINGER)
                batch = []
                if time.monotonic() >= next_trim:
                    self.trim()
                    next_trim = time.monotonic() + _TRIM_INTERVAL
            except redis.RedisError as exc:
                self._redis_failed(exc)
                self._stop.wait(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
        if batch and self._apply(batch):
            self._ack(batch)

    # Reading

    def _client(self) -> redis.Redis:
        client = self.log.client()
        key = self.log.key
        if key != self._key:
            self._ensure_group(client, key)
            self._key = key
        if self._redis_down:
            logger.warning("activity projector: event log reachable again")
            self._redis_down = False
        return client

    def _ensure_group(self, client: redis.Redis, key: str) -> None:
        try:
            client.xgroup_create(key, PROJECTOR_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _read(self) -> list[tuple[bytes, Event | None]]:
        client = self._client()
        try:
            reply: Any = client.xreadgroup(
                PROJECTOR_GROUP, self.name, {self._key: ">"}, count=BATCH, block=_BLOCK_MS
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._key = ""  # the stream was deleted: create the group again
            return []
        batch = [self._decode(i, f) for _, entries in reply or () for i, f in entries]
        self._backlog = len(batch) >= BATCH
        return batch

    def _claim(self) -> list[tuple[bytes, Event | None]]:
        """Take over events that a dead projector left unacknowledged."""
        client = self._client()
        idle_ms = int(get_settings().projector_claim_idle * 1000)
        try:
            reply: Any = client.xautoclaim(
                self._key, PROJECTOR_GROUP, self.name, idle_ms, "0-0", count=BATCH
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._key = ""
            return []
        claimed = [self._decode(i, f) for i, f in reply[1] if f is not None]
        if claimed:
            logger.info("activity projector: took over %d events of a dead projector", len(claimed))
        return claimed

    def _touch(self, batch: list[tuple[bytes, Event | None]]) -> None:
        """Keep our unacknowledged events ours while we wait for the database."""
        try:
            self._client().xclaim(
                self._key, PROJECTOR_GROUP, self.name, 0, [i for i, _ in batch], justid=True
            )
        except redis.RedisError:
            pass

    def _ack(self, batch: list[tuple[bytes, Event | None]]) -> None:
        self._client().xack(self._key, PROJECTOR_GROUP, *[i for i, _ in batch])

    def _decode(self, entry_id: bytes, fields: dict[Any, Any]) -> tuple[bytes, Event | None]:
        """The entry's event; None for one to acknowledge unapplied: malformed, or already
        committed by this process itself (`skip`, checked before the work of decoding)."""
        if self._skip(seq_of(entry_id)):
            return entry_id, None
        return entry_id, decode(entry_id, fields)

    # Applying

    def _apply(self, batch: list[tuple[bytes, Event | None]]) -> bool:
        """Apply a batch in one transaction. False when the database is unreachable."""
        events = [event for _, event in batch if event is not None]
        if not events:
            return True
        try:
            with engines.transaction(self._engine()) as conn:
                projection.apply(conn, events, synchronous_commit=get_settings().synchronous_commit)
        except ActivityStoreError as exc:
            # Misconfigured: nothing can be applied, so nothing is dropped either.
            self._database_failed(exc)
            return False
        except SQLAlchemyError as exc:
            if engines.is_outage(exc):
                self._database_failed(exc)
                return False
            if len(events) > 1:
                # One event the database refuses must not hold back the rest.
                return all(self._apply([(i, e)]) for i, e in batch if e is not None)
            logger.error("activity projector: dropped event %r: %s", events[0], exc)
            return True
        self.applied += len(events)
        self.outage.succeeded()
        return True

    def _database_failed(self, exc: BaseException) -> None:
        if not self._behind_since:
            self._behind_since = time.monotonic()
            self._applied_before = self.applied
        self.outage.failed(exc)

    def _caught_up(self) -> None:
        """After an outage, say so once the stream holds less than a batch for us."""
        if self._behind_since and not self._backlog and not self.outage.since:
            logger.warning(
                "activity projection caught up: %d events applied, %.1fs after the database "
                "became unreachable",
                self.applied - self._applied_before,
                time.monotonic() - self._behind_since,
            )
            self._behind_since = 0.0

    def _redis_failed(self, exc: BaseException) -> None:
        if not self._redis_down:
            self._redis_down = True
            logger.warning("activity projector: event log unreachable (%s); retrying", exc)

    # Housekeeping

    def trim(self) -> int:
        """Trim the stream by age and length, never below what is not yet applied."""
        client = self._client()
        settings = get_settings()
        if self._trim_script is None:
            self._trim_script = client.register_script(TRIM)
        oldest = f"{int((time.time() - settings.events_retention) * 1000)}-0"
        trimmed = int(
            self._trim_script(
                keys=[self._key], args=[PROJECTOR_GROUP, settings.events_maxlen, oldest]
            )
        )
        self._forget_dead_consumers(client)
        return trimmed

    def _forget_dead_consumers(self, client: redis.Redis) -> None:
        consumers: Any = client.xinfo_consumers(self._key, PROJECTOR_GROUP)
        for consumer in consumers:
            name = consumer["name"]
            name = name.decode() if isinstance(name, bytes) else name
            idle_s = int(consumer["idle"]) / 1000
            if name != self.name and not int(consumer["pending"]) and idle_s > _FORGET_IDLE:
                client.xgroup_delconsumer(self._key, PROJECTOR_GROUP, name)
