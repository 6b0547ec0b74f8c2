"""The batch write, payload version 2: the one message in which the interaction processor's
store sends a whole batch to Redis, and what each part does (docs/state-layout.md, "The batch
write"). Three writers follow it: the Lua script below, the native command of recstream's Redis
module (infra/redis_module/recstream_write.c) and, on values rather than bytes, the in-memory
store (tests/contract/test_session_store.py holds all three to the same effects).

A payload is a msgpack array of SECTIONS, in that order:

    rebase      [[key, factor], ...]                  every score of the set multiplied by factor
    states      [[key, field, value, ...], ...]        HSET
    seen        [[key, keep, above, members, scores]]  ZADD GT, then cut (below)
    increments  [[key, keep, above, members, amounts]] added to the scores (as ZINCRBY), then cut
    sets        [[key, member, ...], ...]              SADD
    landmark    [key, value]                           SET ([] in a cluster part without it)
    guards      [[key, floor, event ids, times], ...]  ZADD, then every id older than floor removed
    expire      [ttl_ms, [key, ...]]                   PEXPIRE (the per-user keys written)

A sorted set with more than `above` members (when above > 0) is cut to its top `keep`. Members
and scores travel as two columns: the client sends lists it already has, and ZMSCORE takes them
as they are. Every key's type is checked before anything is written, so a key of another type
fails the whole call and changes nothing. A new version of the payload gets a new command name
(`RECSTREAM.WRITE<version>`): a Redis running an older module build then answers "unknown
command" and the store falls back to the script instead of misreading the payload.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack

PAYLOAD_VERSION = 2
NATIVE_COMMAND = f"RECSTREAM.WRITE{PAYLOAD_VERSION}"
Group = TypeVar("Group", bound=Hashable)
SECTIONS = ("rebase", "states", "seen", "increments", "sets", "landmark", "guards", "expire")


@dataclass(frozen=True, slots=True)
class BatchWrite:
    """One payload, section by section (the layouts above)."""

    rebase: list[list[Any]]
    states: list[list[Any]]
    seen: list[list[Any]]
    increments: list[list[Any]]
    sets: list[list[Any]]
    landmark: list[str]
    guards: list[list[Any]]
    expire: list[Any]

    def encode(self) -> bytes:
        # use_bin_type=False: the raw format, which the Lua cmsgpack in Redis decodes.
        packed: bytes = msgpack.packb(
            [getattr(self, name) for name in SECTIONS], use_bin_type=False
        )
        return packed


def split_by(
    write: BatchWrite, group_of: Callable[[str], Group]
) -> dict[Group, tuple[list[str], BatchWrite]]:
    """The write cut into one payload per group of keys (a Redis Cluster node, or a slot),
    each with the keys it touches. A user's keys share a slot ({user} tag) and so do the
    popularity keys ({pop}), so whatever the grouping by slot or by node, each user's write and
    a landmark move stay in one payload; the batch as a whole does not (docs/state-layout.md)."""
    parts: dict[Group, dict[str, list[Any]]] = {}

    def part(key: str) -> dict[str, list[Any]]:
        return parts.setdefault(group_of(key), {name: [] for name in SECTIONS})

    for name in ("rebase", "states", "seen", "increments", "sets", "guards"):
        for entry in getattr(write, name):
            part(entry[0])[name].append(entry)
    if write.landmark:
        part(write.landmark[0])["landmark"] = list(write.landmark)
    ttl_ms, expiring = write.expire
    for key in expiring:
        section = part(key)["expire"]
        if not section:
            section += [ttl_ms, []]
        section[1].append(key)
    return {
        group: (_keys(sections), _payload(sections, ttl_ms)) for group, sections in parts.items()
    }


def _keys(sections: dict[str, list[Any]]) -> list[str]:
    keys = [
        entry[0]
        for name in ("rebase", "states", "seen", "increments", "sets", "guards")
        for entry in sections[name]
    ]
    if sections["landmark"]:
        keys.append(sections["landmark"][0])
    if sections["expire"]:
        keys += sections["expire"][1]
    return list(dict.fromkeys(keys))


def _payload(sections: dict[str, list[Any]], ttl_ms: int) -> BatchWrite:
    expire = sections["expire"] or [ttl_ms, []]
    return BatchWrite(**(sections | {"expire": expire}))


_LUA_WRITE_BODY = """
local b = cmsgpack.unpack(ARGV[1])
local CHUNK = 2000
local function expect(key, kind)
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= kind then
    error({err = 'WRONGTYPE a recstream key holds another type of value'})
  end
end
for _, r in ipairs(b[1]) do expect(r[1], 'zset') end
for _, r in ipairs(b[2]) do expect(r[1], 'hash') end
for _, r in ipairs(b[3]) do expect(r[1], 'zset') end
for _, r in ipairs(b[4]) do expect(r[1], 'zset') end
for _, r in ipairs(b[5]) do expect(r[1], 'set') end
for _, r in ipairs(b[7]) do expect(r[1], 'zset') end
local function zadd_columns(key, option, members, scores)
  for i = 1, #members, CHUNK do
    local args = {}
    for j = i, math.min(i + CHUNK - 1, #members) do
      args[#args + 1] = scores[j]
      args[#args + 1] = members[j]
    end
    if option then redis.call('ZADD', key, option, unpack(args))
    else redis.call('ZADD', key, unpack(args)) end
  end
end
local function call_ranges(command, key, args, from)
  for i = from, #args, CHUNK do
    redis.call(command, key, unpack(args, i, math.min(i + CHUNK - 1, #args)))
  end
end
local function trim(r)
  if r[3] > 0 and redis.call('ZCARD', r[1]) > r[3] then
    redis.call('ZREMRANGEBYRANK', r[1], 0, -(r[2] + 1))
  end
end
for _, r in ipairs(b[1]) do redis.call('ZUNIONSTORE', r[1], 1, r[1], 'WEIGHTS', r[2]) end
for _, r in ipairs(b[2]) do call_ranges('HSET', r[1], r, 2) end
for _, r in ipairs(b[3]) do
  zadd_columns(r[1], 'GT', r[4], r[5])
  trim(r)
end
-- Increments: read the current scores of a chunk of members at once, add in Lua (doubles, as
-- ZINCRBY adds) and write them back with one ZADD: two calls per chunk instead of one per pair.
for _, r in ipairs(b[4]) do
  local members, increments = r[4], r[5]
  for i = 1, #members, CHUNK do
    local last = math.min(i + CHUNK - 1, #members)
    local current = redis.call('ZMSCORE', r[1], unpack(members, i, last))
    local args = {}
    for m = i, last do
      args[#args + 1] = (tonumber(current[m - i + 1]) or 0) + increments[m]
      args[#args + 1] = members[m]
    end
    redis.call('ZADD', r[1], unpack(args))
  end
  trim(r)
end
for _, r in ipairs(b[5]) do call_ranges('SADD', r[1], r, 2) end
if #b[6] > 0 then redis.call('SET', b[6][1], b[6][2]) end
for _, r in ipairs(b[7]) do
  if #r[3] > 0 then zadd_columns(r[1], nil, r[3], r[4]) end
  redis.call('ZREMRANGEBYSCORE', r[1], '-inf', '(' .. r[2])
end
for _, key in ipairs(b[8][2]) do redis.call('PEXPIRE', key, b[8][1]) end
"""
LUA_WRITE = _LUA_WRITE_BODY + "return #b[2]\n"

# The same write on a Redis Cluster, one call per node: the flag lets the script reach keys of
# every slot its node serves (Redis refuses, before any write, a key of another node: the type
# checks come first). ARGV[2] names the part's marker, which the script sets for ARGV[3] ms in
# the same atomic call as the writes: a part sent again because its answer was lost (the node
# ran it, then stopped) finds its marker and writes nothing (-1).
LUA_WRITE_ON_NODE = (
    "#!lua flags=allow-cross-slot-keys\n"
    "if redis.call('EXISTS', ARGV[2]) == 1 then return -1 end"
    + _LUA_WRITE_BODY
    + "redis.call('SET', ARGV[2], '1', 'PX', ARGV[3])\nreturn #b[2]\n"
)
