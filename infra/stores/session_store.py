"""The session state concern in Redis: per-user state, seen history, popularity, co-visitation.

Writes of one batch go in one call, which Redis runs without interleaving: the native command
of recstream's Redis module where the server has it (infra/redis_module), else a Lua script,
with the same payload (infra/stores/batch_write.py) and effects. The whole batch (states, guards
and counters) is stored or none of it, so a replay after a crash re-applies exactly what was
lost. Key layout: docs/state-layout.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import orjson
import redis
from redis.crc import key_slot

from recstream.core.ports import UserView
from recstream.core.state import BatchEffects, UserState, hidden_above
from recstream.core.trending import TRENDING_POOL, trending_now
from recstream.infra.metrics import CLUSTER_PARTS_RESENT
from recstream.infra.stores.batch_write import (
    LUA_WRITE,
    LUA_WRITE_ON_NODE,
    NATIVE_COMMAND,
    BatchWrite,
    split_by,
)
from recstream.infra.stores.keys import KeySpace

log = logging.getLogger(__name__)

# "ids" (the event-id guards) is read only from states written before the guards got their own
# sorted set (KeySpace.user_guards); it is never written now.
_FIELDS = ("vec", "last", "floor", "n", "ids", "recent", "model", "cr", "cvec", "cver")
# A query needs neither the guards nor the floor.
_QUERY_FIELDS = tuple(f for f in _FIELDS if f not in ("ids", "floor"))


_WRITE_PATHS = {True: "the native command of recstream's module", False: "the Lua script"}

# States and guards of many users in one call: KEYS are (state, guards) pairs, ARGV the state
# fields. One command instead of two per user: the client's per-command cost, not Redis's work,
# dominates loading many small states.
_LOAD_STATES_LUA = """
local out = {}
for i = 1, #KEYS, 2 do
  out[#out + 1] = redis.call('HMGET', KEYS[i], unpack(ARGV))
  out[#out + 1] = redis.call('ZRANGE', KEYS[i + 1], 0, -1, 'WITHSCORES')
end
return out
"""
_LOAD_STATES_SHA = hashlib.sha1(_LOAD_STATES_LUA.encode()).hexdigest()  # EVALSHA's name for it
# The same on a Redis Cluster, one call per node (KEYS[1] routes it): ARGV is the number of
# fields, the fields, then (state, guards) key pairs of users whose slots that node serves.
_LOAD_ON_NODE_LUA = """#!lua flags=allow-cross-slot-keys,no-writes
local n = tonumber(ARGV[1])
local fields = {unpack(ARGV, 2, n + 1)}
local out = {}
for i = n + 2, #ARGV, 2 do
  out[#out + 1] = redis.call('HMGET', ARGV[i], unpack(fields))
  out[#out + 1] = redis.call('ZRANGE', ARGV[i + 1], 0, -1, 'WITHSCORES')
end
return out
"""
_LOAD_ON_NODE_SHA = hashlib.sha1(_LOAD_ON_NODE_LUA.encode()).hexdigest()
# How long a cluster write keeps sending the parts whose node is away (a restart, a failover).
CLUSTER_WRITE_RETRY_S = 30.0
_NODE_AWAY = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterError,  # the cluster's state is not ok yet (and ClusterDownError)
    redis.exceptions.TryAgainError,
    redis.exceptions.NoScriptError,
    redis.exceptions.MovedError,  # the slot moved to another node: ask for the map again
    redis.exceptions.AskError,
)
_WRITE_ON_NODE_SHA = hashlib.sha1(LUA_WRITE_ON_NODE.encode()).hexdigest()
# A part's marker outlives every retry of its write.
_MARKER_MS = int(2 * CLUSTER_WRITE_RETRY_S * 1000)
_LOAD_CHUNK = 500  # users per load call: a script blocks Redis while it runs, so keep it short


def covis_trim_above(keep: int) -> int:
    """A co-visitation set is cut back to `keep` neighbours only once it holds a quarter more:
    new neighbours get a few batches to gather counts before they compete for a place."""
    return keep + keep // 4


class RedisSessionStore:
    def __init__(
        self,
        client: redis.Redis[bytes],
        keys: KeySpace,
        history_cap: int,
        covis_max_neighbours: int,
        popularity_half_life_ms: int,
        trending: tuple[int, float],  # half-life (ms), least decayed recent events
        native_write: bool | None,
        user_ttl_s: int,
    ) -> None:
        """Built from the settings (registry.redis_session_store), which hold the defaults."""
        self._redis = client
        self._user_ttl_ms = user_ttl_s * 1000  # 0: per-user keys never expire
        # The native write command (infra/redis_module): None = find out at the first write.
        self.native_write = native_write
        self.keys = keys
        self._history_cap = history_cap
        self._covis_max = covis_max_neighbours
        self._popularity_half_life_ms = popularity_half_life_ms
        self._trending_half_life_ms, self._min_recent = trending
        self._known_categories: set[str] = set()
        self._write_script = client.register_script(LUA_WRITE)
        # A cluster runs a script on one slot's keys: the batch goes as one call per slot, and
        # the module's command, whose payload names keys it cannot declare, is not used.
        self.cluster = isinstance(client, redis.RedisCluster)
        if self.cluster:
            self.native_write = False

    def load_states(self, user_ids: Iterable[str]) -> dict[str, UserState]:
        """Stored states of the given users (absent users are left out)."""
        users = list(user_ids)
        chunks = [users[start : start + _LOAD_CHUNK] for start in range(0, len(users), _LOAD_CHUNK)]
        states = {}
        for chunk, replies in zip(chunks, self._load_chunks(chunks), strict=True):
            for user, values, guards in zip(chunk, replies[::2], replies[1::2], strict=True):
                if values[1] is not None:
                    state = _decode_state(dict(zip(_FIELDS, values, strict=True)))
                    pairs = zip(guards[::2], guards[1::2], strict=True)  # member, score, ...
                    state.guard_ids.update({i.decode(): int(t) for i, t in pairs})
                    states[user] = state
        return states

    def _load_chunks(self, chunks: list[list[str]], retry: bool = True) -> list[Any]:
        """The load script's replies for each chunk of users, in one round trip: while a batch
        write runs, Redis answers nothing else, and a round trip per chunk waited for it each
        time (a third of the interaction loop's time in the ingest bench). Not redis-py's
        registered Script in the pipeline: it asks SCRIPT EXISTS first, one more round trip
        that waits behind the write too; here NOSCRIPT, which is rare, costs the extra one."""
        if not chunks:
            return []
        if self.cluster:
            return self._load_chunks_by_node(chunks, retry)
        pipe = self._redis.pipeline(transaction=False)
        for chunk in chunks:
            keys = [k for u in chunk for k in (self.keys.user_state(u), self.keys.user_guards(u))]
            pipe.evalsha(_LOAD_STATES_SHA, len(keys), *keys, *_FIELDS)
        try:
            return list(pipe.execute())
        except redis.exceptions.NoScriptError:  # a restarted or flushed Redis: load it, once
            if not retry:
                raise
            self._redis.script_load(_LOAD_STATES_LUA)  # type: ignore[no-untyped-call]
            return self._load_chunks(chunks, retry=False)

    def _load_chunks_by_node(self, chunks: list[list[str]], retry: bool) -> list[Any]:
        """`_load_chunks` on a cluster: per node, one pipelined round trip of calls of at most
        _LOAD_CHUNK users whose keys it serves (a user's two keys share a slot), the replies
        joined back into the chunks' order."""
        by_node: dict[str, list[str]] = {}
        for user in (u for chunk in chunks for u in chunk):
            by_node.setdefault(self._node_of(self.keys.user_state(user)), []).append(user)
        replies: dict[str, tuple[Any, Any]] = {}
        for name, served in by_node.items():
            slices = [served[i : i + _LOAD_CHUNK] for i in range(0, len(served), _LOAD_CHUNK)]
            for users, found in zip(slices, self._load_on_node(name, slices, retry), strict=True):
                replies |= {u: (found[2 * n], found[2 * n + 1]) for n, u in enumerate(users)}
        return [[part for u in chunk for part in replies[u]] for chunk in chunks]

    def _load_on_node(self, name: str, slices: list[list[str]], retry: bool) -> list[Any]:
        cluster = self._cluster_client()
        node = cluster.get_node(node_name=name)
        if node is None:
            raise redis.exceptions.ConnectionError(f"no node {name} in the cluster's map")
        client = cluster.get_redis_connection(node)
        pipe = client.pipeline(transaction=False)
        for users in slices:
            keys = [k for u in users for k in (self.keys.user_state(u), self.keys.user_guards(u))]
            pipe.evalsha(_LOAD_ON_NODE_SHA, 1, keys[0], len(_FIELDS), *_FIELDS, *keys)
        try:
            return list(pipe.execute())
        except redis.exceptions.NoScriptError:  # a restarted node: load it, once
            if not retry:
                raise
            client.script_load(_LOAD_ON_NODE_LUA)  # type: ignore[no-untyped-call]
            return self._load_on_node(name, slices, retry=False)

    def user_view(self, user_id: str) -> UserView:
        """State (without guards), the items seen and still hidden (RECSTREAM_SEEN_HIDE_MS) and
        last response, one pipelined round trip."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hmget(self.keys.user_state(user_id), _QUERY_FIELDS)
        above = hidden_above(int(time.time() * 1000))
        pipe.zrangebyscore(self.keys.user_seen(user_id), f"({above}", "+inf", withscores=True)
        pipe.get(self.keys.user_last_recommendations(user_id))
        values, seen, last = pipe.execute()
        fields = dict(zip(_QUERY_FIELDS, values, strict=True))
        return UserView(
            _decode_state(fields) if fields["last"] is not None else None,
            _times(seen),
            None if last is None else bytes(last),
        )

    def covisitation_many(
        self, item_ids: Sequence[str], limit: int = 50
    ) -> dict[str, dict[str, float]]:
        """`covisitation` of several items in one pipelined round trip."""
        return self._top_many(self.keys.covisitation, item_ids, limit)

    def transitions_many(
        self, item_ids: Sequence[str], limit: int = 50
    ) -> dict[str, dict[str, float]]:
        """Per item, the items most often chosen after it, in one pipelined round trip."""
        return self._top_many(self.keys.transitions, item_ids, limit)

    def _top_many(
        self, key_of: Callable[[str], str], item_ids: Sequence[str], limit: int
    ) -> dict[str, dict[str, float]]:
        pipe = self._redis.pipeline(transaction=False)
        for item_id in item_ids:
            pipe.zrevrange(key_of(item_id), 0, limit - 1, withscores=True)
        return {
            item_id: _scores(pairs) for item_id, pairs in zip(item_ids, pipe.execute(), strict=True)
        }

    def popularity_landmark(self) -> int | None:
        raw = self._redis.get(self.keys.popularity_landmark())
        return None if raw is None else int(raw)

    def write_batch(self, effects: BatchEffects, previous_landmark: int | None) -> None:
        """Store everything a batch changed in one server-side call (atomic, one round trip):
        the module's command or the Lua script (`write_encoded`).

        One call rather than a MULTI pipeline: the batch is tens of thousands of small writes, and
        per-command client overhead, not Redis's work, would be the limit (docs/benchmarks.md).
        """
        new_categories = {c for c, _ in effects.category_popularity} - self._known_categories
        if self.cluster:
            write = self.batch_payload(effects, previous_landmark, new_categories)
            self.write_by_node(write, uuid.uuid4().hex)
        else:
            self.write_encoded(self.encode_batch(effects, previous_landmark, new_categories))
        # Only once stored: after a failed write the retry must register them again.
        self._known_categories |= new_categories

    def encode_batch(
        self, effects: BatchEffects, previous_landmark: int | None, new_categories: set[str]
    ) -> bytes:
        """The write call's payload for a batch: all of the client's work of a write."""
        return self.batch_payload(effects, previous_landmark, new_categories).encode()

    def write_encoded(self, payload: bytes) -> None:
        """Store an `encode_batch` result (all of Redis's work of a write): with the native
        command when the server has it, else with the Lua script. Both have the same effects."""
        if self.native_write is None:
            self.native_write = self.has_native_write()
            log.info("Redis batch writes: %s", _WRITE_PATHS[self.native_write])
        if self.native_write:
            try:
                self._redis.execute_command(NATIVE_COMMAND, payload)
                return
            except redis.exceptions.ResponseError as error:
                if "unknown command" not in str(error).lower():
                    raise
                self.native_write = False
                log.warning("Redis no longer has recstream's module: writing with the Lua script")
        self._write_script(args=[payload])

    def write_by_node(self, write: BatchWrite, write_id: str) -> None:
        """One script call per node, each with the keys of every slot that node serves. A part
        whose node is away (restarting, failing over, its scripts lost) or no longer serves its
        keys is sent again, regrouped by the cluster's current map, until
        CLUSTER_WRITE_RETRY_S, and only it: a part Redis acknowledged is not sent again. A part
        a node ran but did not answer (it stopped in between) is sent again too, and finds the
        marker its first run set (named by write_id and the part's bytes): it writes nothing
        twice. So a node restart neither loses nor doubles a count. Any other error is raised
        at once."""
        pending = [write]
        deadline = time.monotonic() + CLUSTER_WRITE_RETRY_S
        while pending:
            failed: list[BatchWrite] = []
            errors: list[Exception] = []
            for part in pending:
                for node, (keys, piece) in split_by(part, self._node_of).items():
                    error = self._send_to_node(node, keys[0], piece, write_id)
                    if error is not None:
                        failed.append(piece)
                        errors.append(error)
            if not failed:
                return
            fatal = [e for e in errors if not _node_away(e)]
            if fatal or time.monotonic() >= deadline:
                raise (fatal or errors)[0]
            CLUSTER_PARTS_RESENT.inc(len(failed))
            self._refresh_cluster_map()
            time.sleep(0.2)
            pending = failed

    def _node_of(self, key: str) -> str:
        node = self._cluster_client().nodes_manager.get_node_from_slot(_slot(key))  # type: ignore[arg-type]
        return str(node.name)

    def _send_to_node(
        self, name: str, routing_key: str, part: BatchWrite, write_id: str
    ) -> Exception | None:
        """Run one node's part; its error, if it failed."""
        cluster = self._cluster_client()
        node = cluster.get_node(node_name=name)
        if node is None:
            return redis.exceptions.ConnectionError(f"no node {name} in the cluster's map")
        client = cluster.get_redis_connection(node)
        payload = part.encode()
        part_id = hashlib.sha1(write_id.encode() + payload).hexdigest()
        args = (1, routing_key, payload, self.keys.applied_part(routing_key, part_id), _MARKER_MS)
        try:
            try:
                client.evalsha(_WRITE_ON_NODE_SHA, *args)  # type: ignore[no-untyped-call]
            except redis.exceptions.NoScriptError:  # a restarted node: load it, once
                client.script_load(LUA_WRITE_ON_NODE)  # type: ignore[no-untyped-call]
                client.evalsha(_WRITE_ON_NODE_SHA, *args)  # type: ignore[no-untyped-call]
        except redis.RedisError as error:
            return error
        return None

    def _refresh_cluster_map(self) -> None:
        """Ask the cluster again which node serves which slot (after a failover or a move)."""
        # No node answering yet is no error here: the next try asks again.
        with contextlib.suppress(redis.RedisError, redis.exceptions.RedisClusterException):
            self._cluster_client().nodes_manager.initialize()

    def _cluster_client(self) -> redis.RedisCluster[bytes]:
        return cast("redis.RedisCluster[bytes]", self._redis)

    def migrate_untagged_keys(self) -> int:
        """Rename the global keys of a single Redis written before they carried their cluster
        tags (popularity, its landmark and categories, the collaborative versions) to their
        names now; a key whose new name exists already is left. The number renamed."""
        if self.cluster:
            return 0
        renames = self.keys.untagged()
        for raw in self._redis.smembers(self.keys.untagged_categories()):
            category = raw.decode()
            old = self.keys.untagged_category_popularity(category)
            renames[old] = self.keys.category_popularity(category)
        counter = self._redis.get(self.keys.untagged_counter())
        for version in range(1, int(counter or 0) + 1):
            items, factors = self.keys.untagged_collab_data(version)
            renames[items] = self.keys.collab_items(version)
            renames[factors] = self.keys.collab_factors(version)
        renamed = 0
        for old, new in renames.items():
            if self._redis.exists(old) and not self._redis.exists(new):
                self._redis.rename(old, new)  # type: ignore[no-untyped-call]
                renamed += 1
        if renamed:
            log.info("renamed %d global Redis keys to their cluster-tagged names", renamed)
        return renamed

    def has_native_write(self) -> bool:
        """Asked without a payload, a server with the module answers with an arity error (and
        writes nothing). Any other answer ("unknown command", or an ACL that refuses the
        command): the script is used."""
        try:
            self._redis.execute_command(NATIVE_COMMAND)
        except redis.exceptions.ResponseError as error:
            return "wrong number of arguments" in str(error).lower()
        return False

    def batch_payload(
        self, effects: BatchEffects, previous_landmark: int | None, new_categories: set[str]
    ) -> BatchWrite:
        """Everything a batch changed, section by section (infra/stores/batch_write.py)."""
        states = [
            [self.keys.user_state(user), *_state_fields(s)] for user, s in effects.states.items()
        ]
        cap = self._history_cap
        seen = [
            [self.keys.user_seen(user), cap, cap, list(items), list(items.values())]
            for user, items in effects.seen.items()
        ]
        increments = self._counter_increments(effects)
        sets = [[self.keys.categories(), *sorted(new_categories)]] if new_categories else []
        return BatchWrite(
            rebase=self._rebase(previous_landmark, effects.landmark),
            states=states,
            seen=seen,
            increments=increments,
            sets=sets,
            landmark=[self.keys.popularity_landmark(), str(effects.landmark)],
            guards=self._guards(effects),
            expire=[self._user_ttl_ms, self._user_keys(effects) if self._user_ttl_ms else []],
        )

    def _user_keys(self, effects: BatchEffects) -> list[str]:
        """Every per-user key the batch writes: each expires a TTL after its user's last write."""
        keys = [
            k for u in effects.states for k in (self.keys.user_state(u), self.keys.user_guards(u))
        ]
        return keys + [self.keys.user_seen(u) for u in effects.seen]

    def _guards(self, effects: BatchEffects) -> list[list[Any]]:
        """Per changed user: the event ids applied now, and the floor below which ids go. Written
        incrementally: rewriting a heavy user's 1024 ids every batch would cost more than the
        batch's events for that user (docs/benchmarks.md)."""
        no_guards: dict[str, int] = {}
        guards = []
        for user, state in effects.states.items():
            ids = effects.new_guards.get(user, no_guards)
            guards.append(
                [self.keys.user_guards(user), str(state.floor), list(ids), list(ids.values())]
            )
        return guards

    def _rebase(self, old: int | None, new: int) -> list[list[Any]]:
        """ZUNIONSTORE weights that rescale every popularity set to a new forward-decay landmark."""
        if old is None or old == new:
            return []
        factor = 2.0 ** ((old - new) / self._popularity_half_life_ms)
        keys = [self.keys.popularity()] + [
            self.keys.category_popularity(c.decode())
            for c in self._redis.smembers(self.keys.categories())
        ]
        trending = 2.0 ** ((old - new) / self._trending_half_life_ms)
        return [[key, repr(factor)] for key in keys] + [[self.keys.trending(), repr(trending)]]

    def _counter_increments(self, effects: BatchEffects) -> list[list[Any]]:
        by_key: dict[str, dict[str, float]] = {
            self.keys.popularity(): effects.popularity,
            self.keys.trending(): effects.trending,
        }
        for (category, item), boost in effects.category_popularity.items():
            by_key.setdefault(self.keys.category_popularity(category), {})[item] = boost
        keep, above = self._covis_max, covis_trim_above(self._covis_max)
        return [
            [key, 0, 0, list(increments), list(increments.values())]
            for key, increments in by_key.items()
        ] + [
            [key_of(item), keep, above, list(others), list(others.values())]
            for key_of, counts in (
                (self.keys.covisitation, effects.covisits),
                (self.keys.transitions, effects.transitions),
            )
            for item, others in counts.items()
        ]

    # Reads used by the query side and by tests.
    def seen(self, user_id: str) -> dict[str, int]:
        return _times(self._redis.zrange(self.keys.user_seen(user_id), 0, -1, withscores=True))

    def covisitation(self, item_id: str, limit: int = 50) -> dict[str, float]:
        return self.covisitation_many([item_id], limit)[item_id]

    def popularity(self, limit: int = 100, category: str | None = None) -> dict[str, float]:
        key = self.keys.category_popularity(category) if category else self.keys.popularity()
        return _scores(self._redis.zrevrange(key, 0, limit - 1, withscores=True))

    def trending(self, limit: int = 100) -> dict[str, float]:
        """Items by velocity now: the TRENDING_POOL most engaged lately, ranked by velocity."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrevrange(self.keys.trending(), 0, TRENDING_POOL - 1, withscores=True)
        pipe.get(self.keys.popularity_landmark())
        recent, landmark = pipe.execute()
        if landmark is None or not recent:
            return {}
        short = _scores(recent)
        usual = self.popularity_of(list(short))
        half_lives = (self._trending_half_life_ms, self._popularity_half_life_ms)
        return trending_now(short, usual, int(landmark), half_lives, self._min_recent, limit)

    def popularity_of(self, item_ids: list[str]) -> dict[str, float]:
        """Stored popularity of the given items (0 for items never engaged with)."""
        if not item_ids:
            return {}
        scores = self._redis.zmscore(self.keys.popularity(), item_ids)  # type: ignore[no-untyped-call]
        return {item: float(score or 0.0) for item, score in zip(item_ids, scores, strict=True)}

    def remember_response(self, user_id: str, response: bytes, ttl_s: int) -> None:
        """Keep the last response served to a user for a short while (debugging, dedup)."""
        self._redis.set(self.keys.user_last_recommendations(user_id), response, ex=ttl_s)

    def last_response(self, user_id: str) -> bytes | None:
        value = self._redis.get(self.keys.user_last_recommendations(user_id))
        return None if value is None else bytes(value)

    def ping(self) -> bool:
        return bool(self._redis.ping())

    def delete_namespace(self) -> int:
        """Remove every key of this namespace and layout version; the number removed."""
        removed = 0
        batch: list[bytes] = []
        for key in self._redis.scan_iter(match=self.keys.pattern(), count=5000):
            batch.append(key)
            if len(batch) == 5000:
                removed += int(self._redis.delete(*batch))
                batch = []
        if batch:
            removed += int(self._redis.delete(*batch))
        return removed

    def close(self) -> None:
        self._redis.close()


def _node_away(error: Exception) -> bool:
    """A failure of the node, not of the write: it is away, or no longer serves the keys."""
    return isinstance(error, _NODE_AWAY) or "non local key" in str(error)


def _slot(key: str) -> int:
    return int(key_slot(key.encode()))


def _times(pairs: list[tuple[bytes, float]]) -> dict[str, int]:
    return {member.decode(): int(score) for member, score in pairs}


def _scores(pairs: list[tuple[bytes, float]]) -> dict[str, float]:
    return {member.decode(): float(score) for member, score in pairs}


def _state_fields(state: UserState) -> list[bytes | str]:
    """The state hash's fields and values, in HSET's order."""
    return [
        "vec",
        _vector_bytes(state.vector),
        "last",
        str(state.last_time),
        "floor",
        str(state.floor),
        "n",
        str(state.count),
        "recent",
        orjson.dumps(state.recent_items),
        "model",
        state.model,
        "cr",
        orjson.dumps(state.collab_items),
        "cvec",
        _vector_bytes(state.collab_vector),
        "cver",
        str(state.collab_version),
    ]


def _vector_bytes(vector: np.ndarray | None) -> bytes:
    return b"" if vector is None else np.asarray(vector, dtype=np.float32).tobytes()


def _vector_from(raw: bytes | None) -> np.ndarray | None:
    return np.frombuffer(raw, dtype=np.float32).copy() if raw else None


def _decode_state(fields: Mapping[str, bytes | None]) -> UserState:
    """A state from the stored hash fields; fields not read are left at their defaults."""
    ids, recent, c_items = fields.get("ids"), fields.get("recent"), fields.get("cr")
    return UserState(
        vector=_vector_from(fields.get("vec")),
        last_time=int(fields.get("last") or 0),
        floor=int(fields.get("floor") or 0),
        count=int(fields.get("n") or 0),
        guard_ids=orjson.loads(ids) if ids else {},
        recent_items=orjson.loads(recent) if recent else [],
        model=(fields.get("model") or b"").decode(),
        collab_items=orjson.loads(c_items) if c_items else {},
        collab_vector=_vector_from(fields.get("cvec")),
        collab_version=int(fields.get("cver") or 0),
    )
