"""The session state concern in Redis: per-user state, seen history, popularity, co-visitation.

Writes of one batch go in one MULTI/EXEC transaction: either the whole batch (states, guards and
counters) is stored or none of it, so a replay after a crash re-applies exactly what was lost.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

import numpy as np
import orjson
import redis

from recstream.stores.keys import KeySpace
from recstream.streams.session import BatchEffects, UserState

_FIELDS = ("vec", "last", "floor", "n", "ids", "recent", "model")
_TRIM_EVERY = 32  # trim a user's seen set when its event count crosses a multiple of this
_COVIS_TRIM_CHANCE = 1 / 16


class RedisSessionStore:
    def __init__(
        self,
        client: redis.Redis[bytes],
        keys: KeySpace,
        history_cap: int = 500,
        covis_max_neighbours: int = 200,
        popularity_half_life_ms: int = 7 * 24 * 3600 * 1000,
    ) -> None:
        self._redis = client
        self.keys = keys
        self._history_cap = history_cap
        self._covis_max = covis_max_neighbours
        self._popularity_half_life_ms = popularity_half_life_ms
        self._known_categories: set[str] = set()

    @classmethod
    def from_url(cls, url: str, keys: KeySpace, **options: int) -> RedisSessionStore:
        return cls(redis.Redis.from_url(url), keys, **options)

    def load_states(self, user_ids: Iterable[str]) -> dict[str, UserState]:
        """Stored states of the given users (absent users are left out)."""
        users = list(user_ids)
        if not users:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for user in users:
            pipe.hmget(self.keys.user_state(user), _FIELDS)
        states = {}
        for user, values in zip(users, pipe.execute(), strict=True):
            if values[1] is not None:
                states[user] = _decode_state(values)
        return states

    def popularity_landmark(self) -> int | None:
        raw = self._redis.get(self.keys.popularity_landmark())
        return None if raw is None else int(raw)

    def write_batch(self, effects: BatchEffects, previous_landmark: int | None) -> None:
        """Store everything a batch changed, atomically."""
        pipe = self._redis.pipeline(transaction=True)
        self._rebase_popularity(pipe, previous_landmark, effects.landmark)
        for user, state in effects.states.items():
            pipe.hset(self.keys.user_state(user), mapping=_encode_state(state))
        for user, items in effects.seen.items():
            key = self.keys.user_seen(user)
            pipe.zadd(key, items, gt=True)  # type: ignore[arg-type]
            count = effects.states[user].count
            if count // _TRIM_EVERY != (count - len(items)) // _TRIM_EVERY:
                pipe.zremrangebyrank(key, 0, -(self._history_cap + 1))
        self._write_counters(pipe, effects)
        pipe.execute()

    def _rebase_popularity(
        self, pipe: redis.client.Pipeline[bytes], old: int | None, new: int
    ) -> None:
        pipe.set(self.keys.popularity_landmark(), new)
        if old is None or old == new:
            return
        factor = 2.0 ** ((old - new) / self._popularity_half_life_ms)
        keys = [self.keys.popularity()] + [
            self.keys.category_popularity(c.decode())
            for c in self._redis.smembers(self.keys.categories())
        ]
        for key in keys:
            pipe.zunionstore(key, {key: factor})

    def _write_counters(self, pipe: redis.client.Pipeline[bytes], effects: BatchEffects) -> None:
        for item, boost in effects.popularity.items():
            pipe.zincrby(self.keys.popularity(), boost, item)
        for (category, item), boost in effects.category_popularity.items():
            pipe.zincrby(self.keys.category_popularity(category), boost, item)
            if category not in self._known_categories:
                pipe.sadd(self.keys.categories(), category)
                self._known_categories.add(category)
        touched = set()
        for (item, other), count in effects.covisits.items():
            pipe.zincrby(self.keys.covisitation(item), count, other)
            touched.add(item)
        for item in touched:
            if random.random() < _COVIS_TRIM_CHANCE:
                pipe.zremrangebyrank(self.keys.covisitation(item), 0, -(self._covis_max + 1))

    # Reads used by the query side and by tests.
    def seen(self, user_id: str) -> dict[str, int]:
        pairs = self._redis.zrange(self.keys.user_seen(user_id), 0, -1, withscores=True)
        return {item.decode(): int(score) for item, score in pairs}

    def covisitation(self, item_id: str, limit: int = 50) -> dict[str, float]:
        pairs = self._redis.zrevrange(
            self.keys.covisitation(item_id), 0, limit - 1, withscores=True
        )
        return {other.decode(): float(score) for other, score in pairs}

    def popularity(self, limit: int = 100, category: str | None = None) -> dict[str, float]:
        key = self.keys.category_popularity(category) if category else self.keys.popularity()
        pairs = self._redis.zrevrange(key, 0, limit - 1, withscores=True)
        return {item.decode(): float(score) for item, score in pairs}

    def close(self) -> None:
        self._redis.close()


def _encode_state(state: UserState) -> Mapping[str | bytes, bytes | float | int | str]:
    fields: dict[str | bytes, bytes | float | int | str] = {
        "last": state.last_time,
        "floor": state.floor,
        "n": state.count,
        "ids": orjson.dumps(state.guard_ids),
        "recent": orjson.dumps(state.recent_items),
        "model": state.model,
    }
    fields["vec"] = b"" if state.vector is None else state.vector.astype(np.float32).tobytes()
    return fields


def _decode_state(values: list[bytes | None]) -> UserState:
    vec, last, floor, count, ids, recent, model = values
    return UserState(
        vector=np.frombuffer(vec, dtype=np.float32).copy() if vec else None,
        last_time=int(last or 0),
        floor=int(floor or 0),
        count=int(count or 0),
        guard_ids=orjson.loads(ids) if ids else {},
        recent_items=orjson.loads(recent) if recent else [],
        model=(model or b"").decode(),
    )
