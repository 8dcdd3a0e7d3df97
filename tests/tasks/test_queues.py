"""Priority and queue names."""

from __future__ import annotations

import agentexec as ax
from agentexec.config import Settings
from agentexec.tasks.queues import queue_name


def test_priority_maps_to_prefixed_queues() -> None:
    settings = Settings(_env_file=None, queue_prefix="shop")
    assert queue_name(ax.Priority.HIGH, settings) == "shop.high"
    assert queue_name(ax.Priority.LOW, settings) == "shop.low"
    assert queue_name("high", settings) == "shop.high"


def test_values_are_plain_strings() -> None:
    assert ax.Priority.HIGH.value == "high"
    assert ax.Priority("low") is ax.Priority.LOW
