"""Concurrency keys: at most N runs per key RUNNING at once, across every worker.

A task declares `@pool.task(..., lock_key="user:{user_id}", max_concurrency=2)`; the key is
the template filled from the run's context. Each key has, in the broker's Redis:

- `<prefix>.slots.<key>`, a sorted set: the runs holding a slot, scored by when their lease
  ends. A worker renews the leases of its running runs with each heartbeat, so a dead
  worker's slots free once their lease (three heartbeat intervals) is over.
- `<prefix>.parked.<key>`, a list: runs that found every slot taken, in arrival order, each
  with what it takes to queue it again. A parked run is QUEUED ("Waiting for user:42") and
  holds no worker slot: its delivery was acknowledged.

When a slot frees (a run ends, or a lease expires: the reaper looks), the oldest parked runs
get it: the slot is reserved for each (with a lease of its own, for its new delivery to
arrive) and its message is published again. A new run that arrives while runs are parked
queues behind them, so a key's runs start in order, and the other keys' runs never wait
for it: a parked run holds nothing.
"""

from __future__ import annotations

import functools
import json
import string
import time
from typing import Any

import redis
from pydantic import BaseModel

from agentexec.config import get_settings
from agentexec.exceptions import InvalidContextError


def lock_key(task: Any, context: BaseModel) -> str | None:
    """The run's concurrency key from its task's `lock_key` template, or None.

    Raises:
        InvalidContextError: the template names a field the context does not have.
    """
    template = getattr(task, "lock_key", None)
    if not template:
        return None
    try:
        return string.Formatter().vformat(str(template), (), context.model_dump())
    except (KeyError, IndexError, ValueError) as exc:
        raise InvalidContextError(
            task.name, f"lock_key {template!r} cannot be filled from the context: {exc!r}"
        ) from exc


#: The runs this worker process holds a slot for: `{agent_id: key}` (renewed by its heartbeat).
held: dict[str, str] = {}


def lease_seconds() -> float:
    """How long a slot is held without a heartbeat renewing it."""
    return 3 * get_settings().heartbeat_every


#: Take a slot, or park. KEYS: slots, parked, keys set. ARGV: agent id, max, now, lease end,
#: the run's request (JSON), key. Returns {taken (0/1), woken requests...}: runs parked
#: before, woken into slots that were free (their messages must be published again).
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local woken = {}
local function wake()
  while redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) do
    local next = redis.call('LPOP', KEYS[2])
    if not next then break end
    local id = cjson.decode(next)['agent_id']
    redis.call('ZADD', KEYS[1], ARGV[4], id)
    table.insert(woken, next)
  end
end
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
  return {1, unpack(woken)}
end
wake()
if redis.call('LLEN', KEYS[2]) == 0 and redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
  return {1, unpack(woken)}
end
redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('SADD', KEYS[3], ARGV[6])
return {0, unpack(woken)}
"""

#: Give a slot back and wake parked runs into the free slots. KEYS: slots, parked, keys
#: set. ARGV: agent id (or ''), max, now, lease end, key. Returns the woken requests.
_RELEASE = """
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local woken = {}
while redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) do
  local next = redis.call('LPOP', KEYS[2])
  if not next then break end
  redis.call('ZADD', KEYS[1], ARGV[4], cjson.decode(next)['agent_id'])
  table.insert(woken, next)
end
if redis.call('LLEN', KEYS[2]) == 0 then redis.call('SREM', KEYS[3], ARGV[5]) end
return woken
"""


@functools.cache
def _script(client: redis.Redis, source: str) -> Any:
    return client.register_script(source)


def _keys(key: str) -> list[str]:
    keys = get_settings().keys
    return [keys.slots(key), keys.parked(key), keys.parked_keys]


def acquire(
    client: redis.Redis, key: str, agent_id: str, limit: int, request: dict[str, Any]
) -> tuple[bool, list[dict[str, Any]]]:
    """Take one of `key`'s `limit` slots for the run, or park it; and the parked runs woken
    into free slots on the way, whose messages the caller publishes again."""
    now = time.time()
    reply = _script(client, _ACQUIRE)(
        keys=_keys(key),
        args=[
            agent_id,
            limit,
            now,
            now + lease_seconds(),
            json.dumps({**request, "agent_id": agent_id}),
            key,
        ],
        client=client,
    )
    return bool(int(reply[0])), [json.loads(r) for r in reply[1:]]


def release(
    client: redis.Redis, key: str, agent_id: str | None, limit: int
) -> list[dict[str, Any]]:
    """Give the run's slot back (None: only look for expired leases); the parked runs woken
    into free slots, whose messages the caller publishes again."""
    now = time.time()
    reply = _script(client, _RELEASE)(
        keys=_keys(key),
        args=[agent_id or "", limit, now, now + lease_seconds(), key],
        client=client,
    )
    return [json.loads(r) for r in reply]


def renew(client: redis.Redis, held: dict[str, str]) -> None:
    """Extend the leases of the runs this worker runs (`{agent_id: key}`)."""
    if not held:
        return
    until = time.time() + lease_seconds()
    keys = get_settings().keys
    with client.pipeline(transaction=False) as pipe:
        for agent_id, key in held.items():
            pipe.zadd(keys.slots(key), {agent_id: until}, xx=True)
        pipe.execute()


def parked_keys(client: redis.Redis) -> list[tuple[str, int]]:
    """The keys with parked runs, and the limit each was parked under."""
    keys = get_settings().keys
    found = []
    for raw in client.smembers(keys.parked_keys):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        head = client.lindex(keys.parked(key), 0)
        if head is None:
            client.srem(keys.parked_keys, key)
            continue
        request = json.loads(head)
        found.append((key, int(request.get("max_concurrency") or 1)))
    return found
