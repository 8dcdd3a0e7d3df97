"""The worker's model connection pools, in this process: set only where nothing made one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from agents.models import openai_provider
from openai import AsyncOpenAI

from agentexec.config import Settings
from agentexec.testing import ScriptedOpenAIServer
from agentexec.worker.model_client import size_model_pool


@pytest.fixture
def no_shared_client() -> Iterator[None]:
    before = openai_provider._http_client
    openai_provider._http_client = None
    yield
    openai_provider._http_client = before


def _pools(client: Any) -> list[Any]:
    return [transport._pool for transport in client._transport.transports]


def test_the_sdks_shared_client_keeps_what_it_opens_in_pools_of_100(
    no_shared_client: None,
) -> None:
    assert size_model_pool(Settings(model_connections=250, model_connect_timeout=12.5))
    client = openai_provider.shared_http_client()
    limits = [(p._max_connections, p._max_keepalive_connections) for p in _pools(client)]
    assert limits == [(84, 84)] * 3  # 250 connections at most 100 a pool: 3 pools of 84
    assert (client.timeout.connect, client.timeout.read) == (12.5, 600)
    # The openai client built on it (as the SDK builds it) takes its timeouts.
    assert AsyncOpenAI(api_key="x", http_client=client).timeout == client.timeout


async def test_the_pools_take_requests_in_turn(no_shared_client: None) -> None:
    size_model_pool(Settings(model_connections=300))
    client = openai_provider.shared_http_client()
    with ScriptedOpenAIServer() as server:
        for _ in range(6):
            assert (await client.get(f"{server.url}/health")).status_code == 200
    # Each of the 3 pools served 2 of the 6 calls, on one kept connection.
    assert [len(p.connections) for p in _pools(client)] == [1, 1, 1]
    await client.aclose()
    assert [len(p.connections) for p in _pools(client)] == [0, 0, 0]


def test_a_client_made_before_the_worker_booted_is_left_alone(no_shared_client: None) -> None:
    made = openai_provider.shared_http_client()
    assert not size_model_pool(Settings(model_connections=300))
    assert openai_provider.shared_http_client() is made
    assert made._transport._pool._max_keepalive_connections == 100  # type: ignore[attr-defined]


def test_zero_leaves_the_sdk_its_own_client(no_shared_client: None) -> None:
    assert not size_model_pool(Settings(model_connections=0))
    assert openai_provider._http_client is None
