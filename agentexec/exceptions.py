"""Every error agentexec raises.

AgentExecError
├── UnknownTaskError          (also a KeyError)
├── InvalidContextError       (also a ValueError)
├── InvalidAgentIdError       (also a KeyError)
├── UnknownAgentError         (also a KeyError) no run has this id
├── InvalidRequestError       (also a ValueError) a bad timeout, priority, page or size
│   └── ContextTooLargeError  the context is over AGENTEXEC_MAX_CONTEXT_BYTES
├── DeliveryLimitError        the run's worker died with it too often
├── MaxTurnsError             the agent used all its turns without a final answer
├── CheckpointTooLargeError   a run's checkpoint is over AGENTEXEC_CHECKPOINT_MAX_BYTES
├── NotResumableError         `ax.resume` of a run that has no checkpoint or has not stopped
├── ApprovalError             (also a ValueError) which approval is meant is unclear
├── ApprovalExpiredError      a run waited for its approvals past its approval timeout
├── BudgetExceededError       a run spent its token or cost budget, or an owner its daily one
├── ActivityStoreError        the activity database is misconfigured
│   └── MigrationError        its tables cannot be migrated as they are
├── BrokerUnavailableError    (also a ConnectionError) nothing could be queued
└── TaskError
    ├── TaskFailedError
    └── TaskCanceledError
"""

from __future__ import annotations


class AgentExecError(Exception):
    """Base class of agentexec's errors.

    Leaf errors take structured fields; `__reduce__` rebuilds them from those fields, so
    Celery stores them under their own name instead of the nearest base it can rebuild.
    """

    _fields: tuple[str, ...] = ()

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        if not self._fields:
            return type(self), self.args
        return type(self), tuple(getattr(self, name) for name in self._fields)


class UnknownTaskError(AgentExecError, KeyError):
    """No agent task is registered under this name in this process."""

    _fields = ("name", "known")

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        listed = ", ".join(sorted(known)) or "none"
        super().__init__(
            f"unknown agent task {name!r}; registered agent tasks: {listed}. "
            "Import the module that declares it with @pool.task before enqueuing."
        )

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class InvalidContextError(AgentExecError, ValueError):
    """The context does not validate against the task's context model."""

    _fields = ("task_name", "detail")

    def __init__(self, task_name: str, detail: str) -> None:
        self.task_name = task_name
        self.detail = detail
        super().__init__(f"invalid context for agent task {task_name!r}: {detail}")


class InvalidAgentIdError(AgentExecError, KeyError):
    """The id is not a UUID, so no task can have it."""

    _fields = ("agent_id",)

    def __init__(self, agent_id: object) -> None:
        self.agent_id = agent_id
        super().__init__(f"{agent_id!r} is not a valid agent id (expected a UUID)")

    def __str__(self) -> str:
        return str(self.args[0])


class UnknownAgentError(AgentExecError, KeyError):
    """No run has this id (it never existed, or its row and result have expired)."""

    _fields = ("agent_id",)

    def __init__(self, agent_id: object) -> None:
        self.agent_id = agent_id
        super().__init__(f"no agent run has the id {agent_id}")

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidRequestError(AgentExecError, ValueError):
    """An argument is out of its range: a timeout, a priority, a page or a page size."""

    _fields: tuple[str, ...] = ("detail",)

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class ContextTooLargeError(InvalidRequestError):
    """The context is larger than `AGENTEXEC_MAX_CONTEXT_BYTES`; nothing was sent."""

    _fields = ("task_name", "size", "limit")

    def __init__(self, task_name: str, size: int, limit: int) -> None:
        self.task_name = task_name
        self.size = size
        self.limit = limit
        super().__init__(
            f"context of agent task {task_name!r} is {size} bytes of JSON, over the limit of "
            f"{limit} (AGENTEXEC_MAX_CONTEXT_BYTES); pass a reference to large data instead"
        )


class DeliveryLimitError(AgentExecError):
    """The run was delivered more than `AGENTEXEC_MAX_DELIVERIES` times: each time, its
    worker died before it ended (a poison agent, such as one that runs out of memory)."""

    _fields = ("agent_id", "lost")

    def __init__(self, agent_id: str, lost: int) -> None:
        self.agent_id = agent_id
        self.lost = lost
        super().__init__(f"worker lost {lost} times; run {agent_id} is not run again")


class MaxTurnsError(AgentExecError):
    """The agent used all its turns without a final answer."""

    _fields = ("max_turns", "recovered")

    def __init__(self, max_turns: int, recovered: bool) -> None:
        self.max_turns = max_turns
        self.recovered = recovered
        how = "even after its wrap-up turns" if recovered else "(max_turns_recovery is off)"
        super().__init__(
            f"the agent reached its limit of {max_turns} turns without a final answer {how}"
        )


class CheckpointTooLargeError(AgentExecError):
    """A run's checkpoint (its conversation so far) is over `AGENTEXEC_CHECKPOINT_MAX_BYTES`."""

    _fields = ("size", "limit")

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"the run's checkpoint is {size:,} bytes, over the limit of {limit:,} "
            "(AGENTEXEC_CHECKPOINT_MAX_BYTES); raise it, or opt the task out with "
            "@pool.task(..., checkpoint=False)"
        )


class NotResumableError(AgentExecError):
    """`ax.resume` of a run that is not stopped, or that has no checkpoint to resume from."""

    _fields = ("agent_id", "reason")

    def __init__(self, agent_id: str, reason: str) -> None:
        self.agent_id = agent_id
        self.reason = reason
        super().__init__(f"run {agent_id} cannot be resumed: {reason}")


class ApprovalError(AgentExecError, ValueError):
    """Which approval of a waiting run is meant is unclear: no call id while several calls
    wait, or a call id that the run does not wait on."""

    _fields = ("agent_id", "detail", "pending")

    def __init__(self, agent_id: str, detail: str, pending: list[str]) -> None:
        self.agent_id = agent_id
        self.detail = detail
        self.pending = pending
        waiting = ", ".join(pending) or "none"
        super().__init__(f"run {agent_id}: {detail}; pending calls: {waiting}")


class ApprovalExpiredError(AgentExecError):
    """A run waited for its approvals longer than its approval timeout."""

    _fields = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"approval expired after {_duration(seconds)}")


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g}{unit}"
    return f"{seconds:g}s"


class BudgetExceededError(AgentExecError):
    """A run spent more than its budget (it stops at a turn boundary, resumable with
    `ax.resume(..., max_tokens=...)`), or an owner spent its daily budget (enqueue refused)."""

    _fields = ("what", "spent", "limit", "owner")

    def __init__(self, what: str, spent: float, limit: float, owner: str | None = None) -> None:
        self.what = what
        self.spent = spent
        self.limit = limit
        self.owner = owner
        if what == "cost":
            amounts = f"${spent:,.4f} > ${limit:,.4f}"
        else:
            amounts = f"{int(spent):,} tokens > {int(limit):,}"
        whose = f"owner {owner!r} daily " if owner is not None else ""
        super().__init__(f"{whose}budget exceeded: {amounts}")


class ActivityStoreError(AgentExecError):
    """The activity database is misconfigured: a missing driver, an unknown database, no
    permission, or missing tables with `AGENTEXEC_CREATE_TABLES=false`.

    An outage is not this: while the database is merely unreachable, runs go on and their
    activity waits in the event log.
    """

    _fields = ("url", "detail")

    def __init__(self, url: str, detail: str) -> None:
        self.url = url
        self.detail = detail
        super().__init__(f"the activity database {url} is not usable: {detail}")


class MigrationError(ActivityStoreError):
    """The activity tables cannot be migrated as they are; the message says what to do."""

    _fields = ("url", "detail")

    def __str__(self) -> str:
        return self.detail


class BrokerUnavailableError(AgentExecError, ConnectionError):
    """The broker did not take the run (unreachable, or refused it); nothing was queued."""

    _fields = ("url", "detail")

    def __init__(self, url: str, detail: str) -> None:
        self.url = url
        self.detail = detail
        super().__init__(f"the broker at {url} did not take the run, nothing was queued: {detail}")


class TaskError(AgentExecError):
    """The task did not produce a result."""

    _fields = ("agent_id", "reason")

    def __init__(self, agent_id: str, reason: str) -> None:
        self.agent_id = agent_id
        self.reason = reason
        super().__init__(f"agent {agent_id} {self.verb}: {reason}")

    verb = "did not finish"


class TaskFailedError(TaskError):
    """The task raised; `reason` carries the error type and message."""

    verb = "failed"


class TaskCanceledError(TaskError):
    """The task was revoked or canceled before it finished."""

    verb = "was canceled"


def describe(exc: BaseException | None) -> str:
    """`Type: message`, the way an error reads in the activity log."""
    if exc is None:
        return "unknown error"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
