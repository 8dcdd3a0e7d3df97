"""Shared rate limits: requests and tokens per minute per model, counted across every worker.

`AGENTEXEC_RATE_LIMITS` gives the limits per model name (`"*"` for every other model):

```json
{"gpt-4o": {"requests_per_minute": 500, "tokens_per_minute": 300000},
 "*": {"requests_per_minute": 60}}
```

Each limit is a GCRA bucket (the "generic cell rate algorithm", a token bucket kept as one
timestamp) in the broker's Redis, shared by every worker:

- **requests:** each model call reserves the next free moment of its model's bucket, at least
  `60 / requests_per_minute` seconds (and 5% more, for jitter) after the one before, and
  waits for it: calls are spread evenly, and no minute sees more than the limit;
- **tokens:** a call first waits until the tokens spent so far have been paid back down to
  one minute's worth, then its tokens (known once it answered) are added;
- **a 429 from the provider** pushes the model's bucket past the `Retry-After` it gave (or
  a few seconds), so every worker slows down, not only the one that got it.

Why not the `limits` package: it answers "allowed or not" for a cost known up front, while a
model call's tokens are known only after it, and an agent should wait for its turn rather
than poll. One Lua script per call does both.

Per task, `@pool.task(..., rate_limit="10/m")` is global too: a run that would start early is
published again for the moment its turn comes (Celery's own per-worker `rate_limit` is
turned off for agent tasks).
"""

from __future__ import annotations

import functools
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import redis

from agentexec.config import get_settings

#: Calls are spaced this much wider than the limit: the provider sees them after network and
#: scheduling jitter (seconds, on a busy worker), and a call that left late must not let the
#: next minute hold one more.
SPACING = 1.05

#: Reserve the next moment of a bucket. KEYS: the bucket. ARGV: now, interval, burst (s).
#: Returns the seconds to wait (a string, for Lua's integer replies).
_RESERVE = """
local now = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(tat, now)
local wait = start - now - tonumber(ARGV[3])
if wait < 0 then wait = 0 end
local tat = start + tonumber(ARGV[2])
redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil((tat - now) * 1000) + 60000)
return tostring(wait)
"""

#: A model call's turn. KEYS: the tokens bucket, the requests bucket. ARGV: now, the requests'
#: interval (-1: no request limit), the tokens' horizon (-1: no token limit). Waits until at
#: most the horizon's worth of tokens is outstanding, and reserves the request's moment from
#: then. Returns the seconds to wait (a string).
_TURN = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local horizon = tonumber(ARGV[3])
local from = now
if horizon >= 0 then
  local ahead = tonumber(redis.call('GET', KEYS[1]) or '0') - now - horizon
  if ahead > 0 then from = now + ahead end
end
if interval < 0 then return tostring(from - now) end
local start = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), from)
local tat = start + interval
redis.call('SET', KEYS[2], tostring(tat), 'PX', math.ceil((tat - now) * 1000) + 60000)
return tostring(start - now)
"""

#: Add a cost to a bucket after the fact. KEYS: the bucket. ARGV: now, seconds of cost.
_CHARGE = """
local now = tonumber(ARGV[1])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now) + tonumber(ARGV[2])
redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil((tat - now) * 1000) + 60000)
return tostring(tat - now)
"""

#: Push a bucket to at least `until`. KEYS: the bucket. ARGV: now, until.
_HOLD = """
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(ARGV[2]))
local ttl = math.ceil((tat - tonumber(ARGV[1])) * 1000) + 60000
redis.call('SET', KEYS[1], tostring(tat), 'PX', ttl)
return 1
"""


@dataclass(frozen=True, slots=True)
class ModelLimit:
    """One model's limits per minute (None: not limited)."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None


def limit_for(model: str) -> ModelLimit | None:
    """The limits of `model` from `AGENTEXEC_RATE_LIMITS`, or None."""
    table = _table(get_settings().rate_limits or "")
    return table.get(model) or table.get("*")


@functools.lru_cache(maxsize=4)
def _table(source: str) -> dict[str, ModelLimit]:
    if not source.strip():
        return {}
    try:
        raw = json.loads(source)
        return {
            str(model): ModelLimit(
                _positive(entry.get("requests_per_minute")),
                _positive(entry.get("tokens_per_minute")),
            )
            for model, entry in raw.items()
        }
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"AGENTEXEC_RATE_LIMITS is not a table of limits ({exc!r}); expected "
            '{"gpt-4o": {"requests_per_minute": 500, "tokens_per_minute": 300000}}'
        ) from exc


def _positive(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    if number <= 0:
        raise ValueError(f"a limit must be above 0, got {value!r}")
    return number


def parse_rate(text: str) -> float:
    """Seconds between runs for a Celery-style rate: `"10/m"`, `"2/s"`, `"100/h"`, `"5"`
    (per second)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*", str(text))
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"rate_limit must look like '10/m', '2/s' or '100/h', got {text!r}")
    per = {"s": 1.0, "m": 60.0, "h": 3600.0}[match[2] or "s"]
    return per / float(match[1])


@functools.cache
def _script(client: Any, source: str) -> Any:
    return client.register_script(source)


def _bucket(kind: str, name: str) -> str:
    return get_settings().keys.rate_bucket(kind, name)


async def before_call(client: Any, model: str) -> float:
    """Wait for the model's turn (requests and tokens); returns the seconds waited. One
    round trip: the tokens bucket is read and the request's moment reserved together."""
    limit = limit_for(model)
    if limit is None or (limit.tokens_per_minute is None and limit.requests_per_minute is None):
        return 0.0
    import asyncio

    interval = (
        SPACING * 60.0 / limit.requests_per_minute if limit.requests_per_minute is not None else -1
    )
    horizon = 60.0 if limit.tokens_per_minute is not None else -1
    reply = await _script(client, _TURN)(
        keys=[_bucket("tokens", model), _bucket("requests", model)],
        args=[time.time(), interval, horizon],
        client=client,
    )
    wait = float(reply)
    if wait > 0:
        await asyncio.sleep(wait)
    return max(wait, 0.0)


def charge(pipe: Any, model: str, tokens: int) -> None:
    """Queue, on `pipe`, the charge of the tokens a call used to its model's bucket (the
    caller executes the pipeline, with whatever else the turn's end sends)."""
    limit = limit_for(model)
    if limit is None or limit.tokens_per_minute is None or tokens <= 0:
        return
    seconds = tokens * 60.0 / limit.tokens_per_minute
    # EVAL, not a registered script: a pipeline would ask SCRIPT EXISTS first, a round trip.
    pipe.eval(_CHARGE, 1, _bucket("tokens", model), time.time(), seconds)


async def provider_refused(client: Any, model: str, retry_after: float) -> None:
    """A 429: hold every worker's calls to `model` for `retry_after` seconds."""
    now = time.time()
    until = now + max(1.0, retry_after)
    for kind in ("requests", "tokens"):
        await _script(client, _HOLD)(keys=[_bucket(kind, model)], args=[now, until], client=client)


def reserve_start(client: redis.Redis, task: str, interval: float) -> float:
    """Reserve a start of a run of `task` (one per `interval` seconds, globally); the seconds
    until it may start."""
    reply = _script(client, _RESERVE)(
        keys=[_bucket("task", task)], args=[time.time(), interval, 0], client=client
    )
    return float(reply)
