"""The worker's model connection pool, in this process: set only where nothing made one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agents.models import openai_provider

from agentexec.config import Settings
from agentexec.worker.model_client import size_model_pool


@pytest.fixture
def no_shared_client() -> Iterator[None]:
    before = openai_provider._http_client
    openai_provider._http_client = None
    yield
    openai_provider._http_client = before


def test_the_sdks_shared_client_keeps_what_it_opens(no_shared_client: None) -> None:
    assert size_model_pool(Settings(model_connections=300, model_connect_timeout=12.5))
    client = openai_provider.shared_http_client()
    pool = client._transport._pool  # type: ignore[attr-defined]
    assert (pool._max_connections, pool._max_keepalive_connections) == (300, 300)
    assert (client.timeout.connect, client.timeout.read) == (12.5, 600)
    # The openai client built on it (as the SDK builds it) takes its timeouts.
    from openai import AsyncOpenAI

    timeout = AsyncOpenAI(api_key="x", http_client=client).timeout
    assert timeout == client.timeout


def test_a_client_made_before_the_worker_booted_is_left_alone(no_shared_client: None) -> None:
    made = openai_provider.shared_http_client()
    assert not size_model_pool(Settings(model_connections=300))
    assert openai_provider.shared_http_client() is made
    assert made._transport._pool._max_keepalive_connections == 100  # type: ignore[attr-defined]


def test_zero_leaves_the_sdk_its_own_client(no_shared_client: None) -> None:
    assert not size_model_pool(Settings(model_connections=0))
    assert openai_provider._http_client is None
