"""How far the SQL projection has applied the event log: computed in one place, in Redis.

The projectors read the log through one consumer group. Every event up to the entry before
the group's oldest unacknowledged one (or, with none pending, up to the last one delivered)
is in SQL. `PROJECTED` answers that position atomically, for readers on a sync or an async
client (`applied_through` reads its reply); `TRIM` trims the log by age and length, never
past that same floor, so no event is lost before SQL has it.
"""

from __future__ import annotations

from typing import Any

from agentexec.eventlog.event import seq_of

# `floor(stream, group)`: {last delivered id, oldest pending id or nil}; nil without the group
# (or the stream).
_FLOOR = """
local function floor(stream, group)
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', stream)
  if not ok then return nil end
  for _, g in ipairs(groups) do
    local info = {}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    if info['name'] == group then
      if tonumber(info['pending']) > 0 then
        return {info['last-delivered-id'], redis.call('XPENDING', stream, group)[2]}
      end
      return {info['last-delivered-id']}
    end
  end
  return nil
end
"""

#: KEYS: stream. ARGV: group. Returns `floor`, or an empty reply without the group.
PROJECTED = _FLOOR + "return floor(KEYS[1], ARGV[1]) or {}\n"

#: KEYS: stream. ARGV: group, most entries to keep, oldest id to keep by age. Trims below the
#: newer of the age and the length cut, never below the floor; returns the entries removed.
TRIM = (
    _FLOOR
    + """
local function less(a, b)
  local am, an = string.match(a, '(%d+)-(%d+)')
  local bm, bn = string.match(b, '(%d+)-(%d+)')
  if #am ~= #bm then return #am < #bm end
  if am ~= bm then return am < bm end
  return tonumber(an) < tonumber(bn)
end
local f = floor(KEYS[1], ARGV[1])
if not f then return 0 end
local keep = f[2] or f[1]
local target = ARGV[3]
local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[2])
if excess > 0 then
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', math.min(excess, 10000))
  local ms, n = string.match(oldest[#oldest][1], '(%d+)-(%d+)')
  local cut = ms .. '-' .. tostring(tonumber(n) + 1)
  if less(target, cut) then target = cut end
end
if less(keep, target) then target = keep end
return redis.call('XTRIM', KEYS[1], 'MINID', target)
"""
)


def applied_through(reply: Any) -> int | None:
    """From `PROJECTED`'s reply: the position up to which SQL shows the log; None when no
    projector has ever read it."""
    if not reply:
        return None
    if len(reply) > 1 and reply[1]:
        return seq_of(reply[1]) - 1
    return seq_of(reply[0])
