"""Errors carry structured fields, write their own message, and survive pickling."""

from __future__ import annotations

import pickle

import pytest

import agentexec as ax


@pytest.mark.parametrize(
    "error",
    [
        ax.UnknownTaskError("x", ["a", "b"]),
        ax.InvalidContextError("t", "company: field required"),
        ax.InvalidAgentIdError("nope"),
        ax.TaskFailedError("id", "ValueError: bad"),
        ax.TaskCanceledError("id", "Canceled"),
        ax.MaxTurnsError(3, recovered=False),
    ],
)
def test_round_trip(error: ax.AgentExecError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)


def test_messages() -> None:
    assert "registered agent tasks: a, b" in str(ax.UnknownTaskError("x", ["b", "a"]))
    assert str(ax.TaskFailedError("id", "boom")) == "agent id failed: boom"
    assert str(ax.TaskCanceledError("id", "Canceled")) == "agent id was canceled: Canceled"
