"""The broker transport: kombu's Redis transport, publishing an agent's message and its QUEUED
event in one round trip.

An agent task's message carries its QUEUED event in a header (`EVENT_HEADER`, set by the
activity recorder just before the publish). This transport pushes the message onto its queue
and appends the event to the event log in one script: the event is appended only if the
message was queued, and the publish costs no extra round trip. The event's position is left
in the headers (`SEQ_HEADER`), where the recorder finds it to write the QUEUED row. The event
header itself does not travel with the message.

In a kombu publish batch (`Producer.batch()`, used by `ax.enqueue`), the scripts of all the
batch's messages go to Redis in one pipeline when the batch is flushed, and each message's
headers get its outcome then: `SEQ_HEADER`, or `ERROR_HEADER` with the error Redis answered.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from kombu.exceptions import BatchPublishError  # type: ignore[attr-defined]  # kombu 5.7, newer than its stubs
from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps

from agentexec.events import seq_of

#: Header with the QUEUED event to append with the message: `{"key": ..., "fields": {...}}`.
EVENT_HEADER = "agentexec_event"
#: Header the transport fills in: the event's position in the log.
SEQ_HEADER = "agentexec_seq"
#: Header the transport fills in when Redis refused a batched message: the error.
ERROR_HEADER = "agentexec_error"
#: The `broker_transport` setting that selects this transport.
TRANSPORT = "agentexec.broker:Transport"

# KEYS: queue, stream. ARGV: message, then the event's fields as name, value pairs. An error
# from LPUSH (a key of the wrong type, say) ends the script before the XADD.
_PUBLISH = """
redis.call('LPUSH', KEYS[1], ARGV[1])
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
"""


class PublishBatch(kombu_redis.PublishBatch):  # type: ignore[name-defined,misc]
    """kombu's Redis publish batch, handing each agent message its outcome at the flush."""

    def __init__(self, channel: Any, max_size: int) -> None:
        super().__init__(channel, max_size)
        #: Headers of the agent messages whose scripts are buffered, in pipeline order.
        self._agent_headers: deque[dict[str, Any]] = deque()

    def add_agent_message(self, headers: dict[str, Any], *args: Any) -> None:
        """Buffer the publish script of an agent message; `headers` get its outcome."""
        self.add("eval", _PUBLISH, 2, *args)
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

    _publish_script: Any = None

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
        if batch is not None:
            batch.add_agent_message(headers, key, event["key"], dumps(plain), *fields)
            return
        with self.conn_or_acquire() as client:
            if self._publish_script is None:
                self._publish_script = client.register_script(_PUBLISH)
            entry_id = self._publish_script(
                keys=[key, event["key"]], args=[dumps(plain), *fields], client=client
            )
        headers[SEQ_HEADER] = seq_of(entry_id)


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with agentexec's channel."""

    Channel = Channel
