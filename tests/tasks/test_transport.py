"""The broker transport's channel, against a real Redis."""

from __future__ import annotations

import uuid

from kombu import Connection

from agentexec.tasks.transport import TRANSPORT, Channel


def test_a_channel_shares_one_client_for_its_commands_until_its_pool_is_replaced(
    agentexec_redis_url: str,
) -> None:
    with Connection(agentexec_redis_url, transport=TRANSPORT) as connection:
        channel = connection.default_channel
        assert isinstance(channel, Channel)
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            key = f"agentexec-test-{uuid.uuid4()}"
            first.set(key, "1", ex=60)
            assert second.get(key) == b"1"
            first.delete(key)
        # Acknowledging and taking messages go through it too (kombu's QoS).
        with channel.qos.pipe_or_acquire() as pipe:  # type: ignore[attr-defined]
            assert pipe.connection_pool is first.connection_pool

        channel._after_fork()  # type: ignore[attr-defined]  # kombu drops the pool in a fork
        with channel.conn_or_acquire() as after_fork:
            assert after_fork is not first
            assert after_fork.connection_pool is channel.pool
            assert after_fork.ping()
        # The loop's client (BRPOP) stays kombu's own.
        assert channel.client is not after_fork
