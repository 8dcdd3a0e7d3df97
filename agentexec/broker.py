"""The broker transport: kombu's Redis transport, publishing an agent's message and its QUEUED
event in one round trip.

An agent task's message carries its QUEUED event in a header (`EVENT_HEADER`, set by the
activity recorder just before the publish). This transport pushes the message onto its queue
and appends the event to the event log in one script: the event is appended only if the
message was queued, and the publish costs no extra round trip. The event's position is left
in the headers (`SEQ_HEADER`), where the recorder finds it to write the QUEUED row. The event
header itself does not travel with the message.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps

from agentexec.events import seq_of

#: Header with the QUEUED event to append with the message: `{"key": ..., "fields": {...}}`.
EVENT_HEADER = "agentexec_event"
#: Header the transport fills in: the event's position in the log.
SEQ_HEADER = "agentexec_seq"
#: The `broker_transport` setting that selects this transport.
TRANSPORT = "agentexec.broker:Transport"

# KEYS: queue, stream. ARGV: message, then the event's fields as name, value pairs. An error
# from LPUSH (a key of the wrong type, say) ends the script before the XADD.
_PUBLISH = """
redis.call('LPUSH', KEYS[1], ARGV[1])
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
"""


class Channel(kombu_redis.Channel):
    """A Redis channel that appends the QUEUED event of an agent message with it."""

    _publish_script: Any = None

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        headers = message.get("headers") or {}
        event = headers.get(EVENT_HEADER)
        expires = self._expires  # type: ignore[attr-defined]
        if event is None or kwargs.get("_publish_batch") is not None or expires:
            super()._put(queue, message, **kwargs)
            return
        plain = {**message, "headers": {k: v for k, v in headers.items() if k != EVENT_HEADER}}
        key = self._q_for_pri(  # type: ignore[attr-defined]
            queue, self._get_message_priority(plain, reverse=False)
        )
        fields = [part for pair in event["fields"].items() for part in pair]
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
