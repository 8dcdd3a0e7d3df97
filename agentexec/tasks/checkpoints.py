"""Durable runs: a run's checkpoint, its pending approvals and how to queue it again, in Redis.

One hash per run (`Keys.checkpoint`), in the broker's Redis (durable as far as that Redis is:
run it with an append-only file in production):

- `state`: the checkpoint, JSON. A runner writes it at each turn boundary (`kind: history`,
  the conversation the model is sent next) and when the run stops for approvals (`kind:
  state`, the SDK's serialized `RunState`). A new delivery of the run resumes from it.
- `approvals`: while the run waits, the tool calls it waits on, with each decision so far.
- `response`: the model response of the turn in progress, when it asked for tool calls: a
  new delivery replays it rather than calling the model again.
- `decisions`: once every call is decided, those decisions, for the delivery that resumes.
- `request`: how to queue the run again (task, context, queue, priority, owner).
- `max_turns`: turns `ax.resume` gives the next delivery.

The hash expires `checkpoint_retention` seconds after its last write; a run that completes
or is canceled removes it at once. A run waiting for approvals is also in the `waiting`
sorted set, scored by when its wait expires (the reaper ends it then).

Which run a coroutine belongs to is `current_run`, set by the worker for the agent's task.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.asyncio import BlockingConnectionPool
from redis.asyncio import Redis as AsyncRedis

from agentexec.batching import own_copy
from agentexec.config import get_settings
from agentexec.exceptions import CheckpointTooLargeError
from agentexec.runtime import get_runtime

logger = logging.getLogger(__name__)

#: Checkpoint format version; a checkpoint of another version is ignored (the run starts over).
VERSION = 1


@dataclass(slots=True)
class RunScope:
    """The run an agent coroutine executes for, as the worker's delivery describes it."""

    agent_id: str
    task: str
    #: This delivery's number (1 the first time), for "resumed at turn k (delivery n)".
    delivery: int
    #: Whether the task checkpoints its turns (`@pool.task(..., checkpoint=False)` opts out).
    checkpoint: bool
    #: Seconds its approvals may wait.
    approval_timeout: float
    #: How to queue the run again after its approvals: task, context, queue, priority, owner.
    request: dict[str, Any] = field(default_factory=dict)
    #: Turn checkpoints written by this delivery: bytes and seconds of each.
    writes: list[tuple[int, float]] = field(default_factory=list)
    #: Whether the run has a checkpoint (this delivery found or wrote one).
    stored: bool = False
    #: The first delivery of a run never queued again: it has no checkpoint to look for.
    fresh: bool = False
    #: What the run may spend: `{"tokens": n, "cost": x}` (either may be absent).
    budget: dict[str, float] = field(default_factory=dict)


#: The run of the agent coroutine running now (None outside an agentexec worker).
current_run: contextvars.ContextVar[RunScope | None] = contextvars.ContextVar(
    "agentexec_current_run", default=None
)


class RunSuspended(BaseException):
    """Raised by a runner whose agent stopped for approvals; the worker ends the delivery.

    A BaseException, so that a task body's `except Exception` does not swallow it.
    """

    def __init__(self, agent_id: str, approvals: list[dict[str, Any]]) -> None:
        super().__init__(f"run {agent_id} waits for {len(approvals)} approval(s)")
        self.agent_id = agent_id
        self.approvals = approvals


@dataclass(frozen=True, slots=True)
class Stored:
    """What a new delivery of a run finds in its hash."""

    #: The checkpoint (`kind`: history or state), or None.
    state: dict[str, Any] | None
    #: The decisions to apply to a `state` checkpoint: [{call_id, approved, message, by}].
    decisions: list[dict[str, Any]]
    #: Turns `ax.resume` gave this delivery, if it did.
    max_turns: int | None
    #: The stored model response of the turn after `state` ({turn, agent, output}), or None.
    response: dict[str, Any] | None = None


def encode(state: dict[str, Any]) -> bytes:
    """A checkpoint as JSON bytes, or CheckpointTooLargeError past the size cap."""
    data = json.dumps(state, ensure_ascii=False, separators=(",", ":"), default=str).encode()
    limit = get_settings().checkpoint_max_bytes
    if len(data) > limit:
        raise CheckpointTooLargeError(len(data), limit)
    return data


# The loop side: runners read and write through an asyncio client of their loop.

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncRedis] = (
    weakref.WeakKeyDictionary()
)


def async_client() -> AsyncRedis:
    """This loop's client of the broker's Redis."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        # Bounded: a thousand agents checkpointing at once queue for a connection.
        pool = BlockingConnectionPool.from_url(
            get_runtime().events.url, max_connections=64, timeout=300, health_check_interval=30
        )
        client = _clients[loop] = AsyncRedis.from_pool(pool)
    return client


async def load(agent_id: str) -> Stored:
    """The checkpoint and decisions a new delivery of the run resumes from."""
    scope = current_run.get()
    if scope is not None and scope.agent_id == agent_id and scope.fresh:
        return Stored(state=None, decisions=[], max_turns=None)
    key = get_settings().keys.checkpoint(agent_id)
    [raw] = await _writer().write(
        lambda pipe: pipe.hmget(key, ["state", "decisions", "max_turns", "response"])
    )
    state = _json(raw[0])
    if not isinstance(state, dict) or state.get("v") != VERSION:
        state = None
    decisions = _json(raw[1])
    response = _json(raw[3])
    if not isinstance(response, dict) or response.get("v") != VERSION:
        response = None
    if (state is not None or response is not None) and scope is not None:
        if scope.agent_id == agent_id:
            scope.stored = True
    return Stored(
        state=state,
        decisions=decisions if isinstance(decisions, list) else [],
        max_turns=int(raw[2]) if raw[2] else None,
        response=response,
    )


async def save(scope: RunScope, state: dict[str, Any]) -> None:
    """Store a turn checkpoint: it replaces the last one, and decisions already applied."""
    started = time.perf_counter()
    data = encode({"v": VERSION, **state})
    key = get_settings().keys.checkpoint(scope.agent_id)
    retention = get_settings().checkpoint_retention

    def commands(pipe: Any) -> None:
        pipe.hset(key, "state", data)
        pipe.hdel(key, "decisions", "max_turns", "response")
        pipe.expire(key, retention)

    await _writer().write(commands)
    scope.writes.append((len(data), time.perf_counter() - started))
    scope.stored = True


async def save_response(scope: RunScope, response: dict[str, Any]) -> None:
    """Store the model response of the turn in progress (it asked for tool calls)."""
    started = time.perf_counter()
    data = encode({"v": VERSION, **response})
    key = get_settings().keys.checkpoint(scope.agent_id)
    retention = get_settings().checkpoint_retention

    def commands(pipe: Any) -> None:
        pipe.hset(key, "response", data)
        pipe.expire(key, retention)

    await _writer().write(commands)
    scope.writes.append((len(data), time.perf_counter() - started))
    scope.stored = True


async def suspend(scope: RunScope, state: dict[str, Any], approvals: list[dict[str, Any]]) -> None:
    """Store the state of a run that stops for `approvals`, and what re-queues it."""
    data = encode({"v": VERSION, **state})
    settings = get_settings()
    key = settings.keys.checkpoint(scope.agent_id)
    deadline = time.time() + scope.approval_timeout
    request = {**scope.request, "approval_timeout": scope.approval_timeout, "deadline": deadline}

    def commands(pipe: Any) -> None:
        pipe.hset(
            key,
            mapping={
                "state": data,
                "approvals": json.dumps(approvals),
                "request": json.dumps(request),
            },
        )
        pipe.hdel(key, "decisions", "max_turns", "response")
        # Kept at least as long as the wait, and the retention after it.
        pipe.expire(key, int(scope.approval_timeout) + settings.checkpoint_retention)
        pipe.zadd(settings.keys.waiting, {scope.agent_id: deadline})

    await _writer().write(commands)
    scope.stored = True


class _Writer:
    """Reads and writes the checkpoints of one loop's runs, everything waiting now in one
    transaction: a thousand agents that end a turn together make one round trip, not a
    thousand queued for the connections of a pool."""

    def __init__(self, client: AsyncRedis) -> None:
        self.client = client
        self.pending: list[tuple[Any, asyncio.Future[list[Any]]]] = []
        self.flushing: asyncio.Task[None] | None = None

    async def write(self, commands: Any) -> list[Any]:
        """Queue `commands(pipeline)` and wait until they ran; their replies."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.pending.append((commands, future))
        if self.flushing is None or self.flushing.done():
            self.flushing = asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, []
            try:
                replies, spans = await self._execute(batch)
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(own_copy(exc))
            else:
                for (_, future), (start, end) in zip(batch, spans, strict=True):
                    if not future.done():
                        future.set_result(replies[start:end])
            finally:  # cancelled (the loop stops): so are its waiters
                for _, future in batch:
                    if not future.done():
                        future.cancel()

    async def _execute(
        self, batch: list[tuple[Any, asyncio.Future[list[Any]]]]
    ) -> tuple[list[Any], list[tuple[int, int]]]:
        """Run `batch` as one transaction; a timeout or a lost connection (Redis busy or
        restarting) is retried for about 10 s: every command here can run twice."""
        attempt = 0
        while True:
            try:
                async with self.client.pipeline(transaction=True) as pipe:
                    spans = []
                    for commands, _ in batch:
                        start = len(pipe.command_stack)
                        commands(pipe)
                        spans.append((start, len(pipe.command_stack)))
                    return await pipe.execute(), spans
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if attempt >= _WRITE_RETRIES:
                    raise
                delay = min(2.0, 0.1 * 2**attempt)
                logger.warning("checkpoint write of %d run(s) retried in %.1fs: %s",
                               len(batch), delay, exc)  # fmt: skip
                await asyncio.sleep(delay)
                attempt += 1


#: Retries of a checkpoint transaction after a timeout or a lost connection (about 10 s).
_WRITE_RETRIES = 8

_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Writer] = (
    weakref.WeakKeyDictionary()
)


def _writer() -> _Writer:
    loop = asyncio.get_running_loop()
    writer = _writers.get(loop)
    if writer is None:
        writer = _writers[loop] = _Writer(async_client())
    return writer


# The worker's and the producer's side, from a thread.


def forget(client: redis.Redis, agent_id: str) -> None:
    """Remove a run's checkpoint and its wait: it completed or was canceled."""
    keys = get_settings().keys
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(keys.checkpoint(agent_id))
        pipe.zrem(keys.waiting, agent_id)
        pipe.execute()


def keep(client: redis.Redis, agent_id: str) -> None:
    """Keep a failed run's checkpoint for the retention window, for `ax.resume`."""
    client.expire(get_settings().keys.checkpoint(agent_id), get_settings().checkpoint_retention)


#: Decide one approval atomically. Returns {code, ...}:
#: -1 the run waits for nothing; -2 `call_id` is empty and more than one call is pending
#: (with their ids); -3 no pending call has that id (with the pending ids); 0 already
#: decided; 1 decided, more pending (tool); 2 decided, the last one (tool, request, decisions).
_DECIDE = """
if not redis.call('ZSCORE', KEYS[2], ARGV[6]) then return {-1} end
local raw = redis.call('HGET', KEYS[1], 'approvals')
if not raw then return {-1} end
local approvals = cjson.decode(raw)
local pending = {}
for _, a in ipairs(approvals) do
  if a['approved'] == nil then table.insert(pending, a['call_id']) end
end
local call = ARGV[1]
if call == '' then
  if #pending ~= 1 then return {-2, cjson.encode(pending)} end
  call = pending[1]
end
local target = nil
for _, a in ipairs(approvals) do
  if a['call_id'] == call then target = a end
end
if target == nil then return {-3, cjson.encode(pending)} end
if target['approved'] ~= nil then return {0, target['tool']} end
target['approved'] = (ARGV[2] == '1')
if ARGV[3] ~= '' then target['message'] = ARGV[3] end
if ARGV[4] ~= '' then target['by'] = ARGV[4] end
target['at'] = tonumber(ARGV[5])
if #pending > 1 then
  redis.call('HSET', KEYS[1], 'approvals', cjson.encode(approvals))
  return {1, target['tool'], call}
end
redis.call('HDEL', KEYS[1], 'approvals')
redis.call('HSET', KEYS[1], 'decisions', cjson.encode(approvals))
redis.call('ZREM', KEYS[2], ARGV[6])
return {2, target['tool'], call, redis.call('HGET', KEYS[1], 'request') or ''}
"""


@functools.cache
def _decide_script(client: redis.Redis, source: str = _DECIDE) -> Any:
    return client.register_script(source)


#: Take back the last decision of a run that could not be queued again: it waits again.
_UNDECIDE = """
local raw = redis.call('HGET', KEYS[1], 'decisions')
if not raw then return 0 end
local approvals = cjson.decode(raw)
for _, a in ipairs(approvals) do
  if a['call_id'] == ARGV[1] then
    a['approved'] = nil
    a['message'] = nil
    a['by'] = nil
    a['at'] = nil
  end
end
redis.call('HSET', KEYS[1], 'approvals', cjson.encode(approvals))
redis.call('HDEL', KEYS[1], 'decisions')
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
"""


def undecide(client: redis.Redis, agent_id: str, call_id: str, deadline: float) -> None:
    """Take back the decision that settled a run's last approval (its re-queue failed)."""
    keys = get_settings().keys
    _decide_script(client, _UNDECIDE)(
        keys=[keys.checkpoint(agent_id), keys.waiting], args=[call_id, deadline, agent_id]
    )


@dataclass(frozen=True, slots=True)
class Decided:
    """What deciding one approval did."""

    #: -1 not waiting, -2 ambiguous, -3 unknown call, 0 already decided, 1 more pending,
    #: 2 that was the last one: re-queue the run with `request`.
    code: int
    tool: str = ""
    call_id: str = ""
    pending: list[str] = field(default_factory=list)
    request: dict[str, Any] = field(default_factory=dict)


def decide(
    client: redis.Redis,
    agent_id: str,
    call_id: str | None,
    approved: bool,
    message: str | None,
    by: str | None,
) -> Decided:
    """Record one decision on a waiting run's approval, atomically (see `_DECIDE`)."""
    keys = get_settings().keys
    reply = _decide_script(client)(
        keys=[keys.checkpoint(agent_id), keys.waiting],
        args=[
            call_id or "",
            "1" if approved else "0",
            message or "",
            by or "",
            time.time(),
            agent_id,
        ],
        client=client,
    )
    code = int(reply[0])
    text = [r.decode() if isinstance(r, bytes) else str(r) for r in reply[1:]]
    if code in (-2, -3):
        pending = json.loads(text[0]) if text and text[0] not in ("", "{}") else []
        return Decided(code, pending=list(pending))
    if code == 2:
        request = json.loads(text[2]) if len(text) > 2 and text[2] else {}
        return Decided(code, tool=text[0], call_id=text[1], request=request)
    return Decided(code, tool=text[0] if text else "", call_id=text[1] if len(text) > 1 else "")


def claim_for_resume(client: redis.Redis, agent_id: str, max_turns: int | None) -> dict[str, Any]:
    """Prepare a stopped run's checkpoint for `ax.resume`; its request, or {} without one."""
    key = get_settings().keys.checkpoint(agent_id)
    state, request = client.hmget(key, ["state", "request"])
    if state is None:
        return {}
    with client.pipeline(transaction=True) as pipe:
        if max_turns is not None:
            pipe.hset(key, "max_turns", max_turns)
        pipe.expire(key, get_settings().checkpoint_retention)
        pipe.execute()
    parsed = _json(request)
    return parsed if isinstance(parsed, dict) else {"missing": True}


def remember_request(client: redis.Redis, agent_id: str, request: dict[str, Any]) -> None:
    """Keep how to queue a run again, beside its checkpoint (a failed run, for `ax.resume`)."""
    key = get_settings().keys.checkpoint(agent_id)
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(key, "request", json.dumps(request))
        pipe.expire(key, get_settings().checkpoint_retention)
        pipe.execute()


def expired(client: redis.Redis, now: float, limit: int = 100) -> list[str]:
    """Runs whose wait for approvals expired, each claimed by this caller alone."""
    key = get_settings().keys.waiting
    ids = client.zrangebyscore(key, "-inf", now, start=0, num=limit)
    claimed = []
    for raw in ids:
        agent_id = raw.decode() if isinstance(raw, bytes) else str(raw)
        if client.zrem(key, agent_id):
            claimed.append(agent_id)
    return claimed


def waiting_since(client: redis.Redis, agent_id: str) -> dict[str, Any]:
    """The approval timeout of a waiting run's request (for "expired after ..."), or {}."""
    parsed = _json(client.hget(get_settings().keys.checkpoint(agent_id), "request"))
    return parsed if isinstance(parsed, dict) else {}


def _json(raw: bytes | str | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None
