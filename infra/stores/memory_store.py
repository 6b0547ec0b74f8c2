"""The session state in process memory, with the Redis store's semantics: same trimming of seen
histories and co-visitation sets, same forward-decay rebase, same order among equal scores
(Redis sorts equal scores by member). The offline evaluation replays datasets into it through
the same InteractionProcessor and Recommender code the services run.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace

from recstream.core.ports import UserView
from recstream.core.settings import Settings
from recstream.core.state import BatchEffects, UserState, hidden_above
from recstream.core.trending import TRENDING_POOL, trending_now
from recstream.infra.stores.session_store import covis_trim_above

_SortedSet = dict[str, float]


def _top(scores: _SortedSet, limit: int) -> list[tuple[str, float]]:
    """Highest first; equal scores by member, descending, as ZREVRANGE orders them."""
    return sorted(scores.items(), key=lambda pair: (pair[1], pair[0]), reverse=True)[:limit]


def _cut(scores: _SortedSet, keep: int, above: int) -> None:
    if len(scores) > above:
        kept = dict(_top(scores, keep))
        for member in [m for m in scores if m not in kept]:
            del scores[member]


class InMemorySessionStore:
    def __init__(
        self,
        history_cap: int,
        covis_max_neighbours: int,
        popularity_half_life_ms: int,
        trending: tuple[int, float],  # half-life (ms), least decayed recent events
    ) -> None:
        """Built from the settings (`from_settings`), which hold the defaults."""
        self._history_cap = history_cap
        self._covis_max = covis_max_neighbours
        self._popularity_half_life_ms = popularity_half_life_ms
        self._trending_half_life_ms, self._min_recent = trending
        self._trending: _SortedSet = {}
        self._states: dict[str, UserState] = {}
        self._seen: dict[str, _SortedSet] = defaultdict(dict)
        self._popularity: _SortedSet = {}
        self._category_popularity: dict[str, _SortedSet] = defaultdict(dict)
        self._covis: dict[str, _SortedSet] = defaultdict(dict)
        self._transitions: dict[str, _SortedSet] = defaultdict(dict)
        self._landmark: int | None = None
        self._responses: dict[str, bytes] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> InMemorySessionStore:
        return cls(
            settings.history_cap,
            settings.covis_max_neighbours,
            settings.popularity_half_life_ms,
            (settings.trending_half_life_ms, settings.trending_min_recent),
        )

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        """Nothing to release: the state lives in this object."""

    def load_states(self, user_ids: Iterable[str]) -> dict[str, UserState]:
        return {u: self._states[u].copy() for u in user_ids if u in self._states}

    def popularity_landmark(self) -> int | None:
        return self._landmark

    def write_batch(self, effects: BatchEffects, previous_landmark: int | None) -> None:
        if previous_landmark is not None and previous_landmark != effects.landmark:
            self._rebase(effects.landmark - previous_landmark)
        for user, state in effects.states.items():
            self._states[user] = state.copy()
        for user, items in effects.seen.items():
            seen = self._seen[user]
            for item, score in items.items():
                seen[item] = max(seen.get(item, score), score)
            _cut(seen, self._history_cap, self._history_cap)
        _increment(self._popularity, effects.popularity)
        _increment(self._trending, effects.trending)
        for (category, item), boost in effects.category_popularity.items():
            _increment(self._category_popularity[category], {item: boost})
        for table, counts in (
            (self._covis, effects.covisits),
            (self._transitions, effects.transitions),
        ):
            for item, others in counts.items():
                _increment(table[item], others)
                _cut(table[item], self._covis_max, covis_trim_above(self._covis_max))
        self._landmark = effects.landmark

    def seen(self, user_id: str) -> dict[str, int]:
        return {item: int(t) for item, t in self._seen.get(user_id, {}).items()}

    def covisitation(self, item_id: str, limit: int = 50) -> dict[str, float]:
        return dict(_top(self._covis.get(item_id, {}), limit))

    def user_view(self, user_id: str) -> UserView:
        state = self._states.get(user_id)
        above = hidden_above(int(time.time() * 1000))
        return UserView(
            None if state is None else replace(state, guard_ids={}, floor=0).copy(),
            {item: t for item, t in self.seen(user_id).items() if t > above},
            self.last_response(user_id),
        )

    def covisitation_many(
        self, item_ids: Sequence[str], limit: int = 50
    ) -> dict[str, dict[str, float]]:
        return {item_id: self.covisitation(item_id, limit) for item_id in item_ids}

    def transitions_many(
        self, item_ids: Sequence[str], limit: int = 50
    ) -> dict[str, dict[str, float]]:
        return {i: dict(_top(self._transitions.get(i, {}), limit)) for i in item_ids}

    def popularity(self, limit: int = 100, category: str | None = None) -> dict[str, float]:
        scores = self._category_popularity.get(category, {}) if category else self._popularity
        return dict(_top(scores, limit))

    def popularity_of(self, item_ids: list[str]) -> dict[str, float]:
        return {item: self._popularity.get(item, 0.0) for item in item_ids}

    def trending(self, limit: int = 100) -> dict[str, float]:
        if self._landmark is None:
            return {}
        short = dict(_top(self._trending, TRENDING_POOL))
        half_lives = (self._trending_half_life_ms, self._popularity_half_life_ms)
        return trending_now(
            short, self._popularity, self._landmark, half_lives, self._min_recent, limit
        )

    def _rebase(self, moved_ms: int) -> None:
        """Every forward-decayed score rescaled to a landmark moved_ms later."""
        factor = 2.0 ** (-moved_ms / self._popularity_half_life_ms)
        for scores in [self._popularity, *self._category_popularity.values()]:
            for member in scores:
                scores[member] *= factor
        factor = 2.0 ** (-moved_ms / self._trending_half_life_ms)
        for member in self._trending:
            self._trending[member] *= factor

    def remember_response(self, user_id: str, response: bytes, ttl_s: int) -> None:
        """Kept without expiry: offline there is no wall clock for a TTL to run on."""
        self._responses[user_id] = response

    def last_response(self, user_id: str) -> bytes | None:
        return self._responses.get(user_id)

    def users(self) -> list[str]:
        return list(self._states)


def _increment(scores: _SortedSet, increments: dict[str, float]) -> None:
    for member, amount in increments.items():
        scores[member] = scores.get(member, 0.0) + amount
