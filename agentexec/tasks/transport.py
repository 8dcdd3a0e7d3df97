"""The broker transport: kombu's Redis transport, publishing an agent's message and its QUEUED
event in one round trip.

An agent task's message carries its QUEUED event in a header (`EVENT_HEADER`, set just
before the publish by `agentexec.tasks.queued`). This transport pushes the message onto its
queue and appends the event to the event log in one script: the event is appended only if the
message was queued, and the publish costs no extra round trip. The event's position is left
in the headers (`SEQ_HEADER`), where `queued.write_queued` finds it to write the QUEUED row.
The event header itself does not travel with the message.

The same script keeps a copy of the message, under its delivery tag, until it is acknowledged
(`Keys.messages`). kombu moves a message from its queue (BRPOP) to the unacknowledged
hash in two steps; a worker killed between them would lose it. The reaper
(`agentexec.worker.reaper`) puts such a message back on its queue from its copy.

In a kombu publish batch (`Producer.batch()`, used by `ax.enqueue`), the scripts of all the
batch's messages go to Redis in one pipeline when the batch is flushed, and each message's
headers get its outcome then: `SEQ_HEADER`, or `ERROR_HEADER` with the error Redis answered.
"""

from __future__ import annotations

import logging
from collections import deque
from queue import Empty
from typing import Any

from kombu.exceptions import BatchPublishError  # type: ignore[attr-defined]  # kombu 5.7, newer than its stubs
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from agentexec.config import get_settings
from agentexec.eventlog.event import seq_of

logger = logging.getLogger(__name__)

#: Header with the QUEUED event to append with the message: `{"key": ..., "fields": {...}}`.
EVENT_HEADER = "agentexec_event"
#: Header the transport fills in: the event's position in the log.
SEQ_HEADER = "agentexec_seq"
#: Header the transport fills in when Redis refused a batched message: the error.
ERROR_HEADER = "agentexec_error"
#: The `broker_transport` setting that selects this transport.
TRANSPORT = "agentexec.tasks.transport:Transport"

# KEYS: queue, stream, copies. ARGV: message, delivery tag, then the event's fields as name,
# value pairs. An error from LPUSH (a key of the wrong type, say) ends the script at once.
_PUBLISH = """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[2], KEYS[1] .. '\\n' .. ARGV[1])
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
"""


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS; acknowledging a message also drops its copy, in the same round trip."""

    def ack(self, delivery_tag: str) -> None:
        self._forget(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue:
            super().reject(delivery_tag, requeue=True)  # back on its queue: keep the copy
            return
        self._forget(delivery_tag)

    def _forget(self, delivery_tag: str) -> None:
        """Drop the message from the unacknowledged index and hash, and its copy."""
        pipe = self._remove_from_indices(delivery_tag)  # type: ignore[attr-defined]
        pipe.hdel(get_settings().keys.messages, delivery_tag).execute()
        virtual.QoS.ack(self, delivery_tag)


class PublishBatch(kombu_redis.PublishBatch):  # type: ignore[name-defined,misc]
    """kombu's Redis publish batch, handing each agent message its outcome at the flush."""

    def __init__(self, channel: Any, max_size: int) -> None:
        super().__init__(channel, max_size)
        #: Headers of the agent messages whose scripts are buffered, in pipeline order.
        self._agent_headers: deque[dict[str, Any]] = deque()

    def add_agent_message(self, headers: dict[str, Any], *args: Any) -> None:
        """Buffer the publish script of an agent message; `headers` get its outcome."""
        self.add("eval", _PUBLISH, 3, *args)
        self._agent_headers.append(headers)

    def flush(self) -> None:
        """Execute the buffered commands; an agent message's refusal is its own error."""
        self._check_usable()
        if not self._buffered:  # type: ignore[has-type]
            return
        commands = list(self.pipeline.command_stack)
        try:
            results = self.pipeline.execute(raise_on_error=False)
        except BaseException as exc:
            self._failed = exc
            self._buffered = 0
            self._agent_headers.clear()
            self.pipeline.reset()
            if isinstance(exc, Exception):
                message = "Redis publish batch failed; delivery is uncertain"
                raise BatchPublishError(message) from exc
            raise
        self._buffered = 0
        for (args, _), result in zip(commands, results, strict=True):
            if args[0] != "EVAL" or args[1] != _PUBLISH:
                continue
            headers = self._agent_headers.popleft()
            if isinstance(result, Exception):
                headers[ERROR_HEADER] = result
            else:
                headers[SEQ_HEADER] = seq_of(result)

    def discard(self) -> None:
        super().discard()
        self._agent_headers.clear()


class Channel(kombu_redis.Channel):
    """A Redis channel that appends the QUEUED event of an agent message with it."""

    QoS = QoS
    _publish_script: Any = None
    #: The client of every synchronous command of this channel (see `_create_client`).
    _shared_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        """kombu's, except that synchronous commands share one client per connection pool.

        kombu builds a new `redis.Redis` for every acknowledgement, every message it
        takes and every task event it sends; building one costs about 75 µs of CPU, a tenth
        of a busy worker's time. A client is safe to share between threads: each command
        borrows a connection from the pool. kombu replaces the pool after a fork, and a new
        one gets a new client.
        """
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[misc]  # not in kombu's stubs
        pool = self.pool
        client = self._shared_client
        if client is None or client.connection_pool is not pool:
            client = self._shared_client = super()._create_client()  # type: ignore[misc]
        return client

    def create_publish_batch(self, max_size: int) -> PublishBatch:
        """A publish batch that also hands agent messages their outcome."""
        return PublishBatch(self, max_size)

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        headers = message.get("headers") or {}
        event = headers.get(EVENT_HEADER)
        expires = self._expires  # type: ignore[attr-defined]
        batch = kwargs.get("_publish_batch")
        if event is None or expires or not (batch is None or isinstance(batch, PublishBatch)):
            super()._put(queue, message, **kwargs)
            return
        plain = {**message, "headers": {k: v for k, v in headers.items() if k != EVENT_HEADER}}
        key = self._q_for_pri(  # type: ignore[attr-defined]
            queue, self._get_message_priority(plain, reverse=False)
        )
        fields = [part for pair in event["fields"].items() for part in pair]
        tag = message["properties"]["delivery_tag"]
        if batch is not None:
            batch.add_agent_message(
                headers, key, event["key"], get_settings().keys.messages, dumps(plain), tag, *fields
            )
            return
        with self.conn_or_acquire() as client:
            if self._publish_script is None:
                self._publish_script = client.register_script(_PUBLISH)
            entry_id = self._publish_script(
                keys=[key, event["key"], get_settings().keys.messages],
                args=[dumps(plain), tag, *fields],
                client=client,
            )
        headers[SEQ_HEADER] = seq_of(entry_id)

    def _brpop_read(self, **options: Any) -> bool:
        """kombu's, except that a message it cannot read is set aside instead of stopping the
        worker ("Unrecoverable error: JSONDecodeError")."""
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:  # type: ignore[attr-defined]
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise Empty()
            dest, item = dest__item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)  # type: ignore[attr-defined]
            message = _readable(item)
            if message is None:
                self._set_aside(dest, item)
            else:
                self.connection._deliver(message, dest)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()  # type: ignore[attr-defined]  # kombu: the connection is idle

    def _set_aside(self, queue: str, item: bytes) -> None:
        key = get_settings().keys.dead
        logger.error(
            "refused a malformed message on queue %s (kept in the Redis list %s): %r",
            queue,
            key,
            item[:200],
        )
        with self.conn_or_acquire() as client:
            client.pipeline().lpush(key, item).ltrim(key, 0, 9_999).execute()


def _readable(item: bytes) -> dict[str, Any] | None:
    """The message in `item`, or None when it is not JSON shaped like a kombu message."""
    try:
        message = loads(bytes_to_str(item))
    except ValueError:  # JSON and Unicode decoding errors alike
        return None
    if not isinstance(message, dict) or "body" not in message:
        return None
    properties = message.get("properties")
    if not isinstance(properties, dict) or "delivery_tag" not in properties:
        return None
    return message


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with agentexec's channel."""

    Channel = Channel
