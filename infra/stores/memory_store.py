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
from recstream.core.state import BatchEffects, UserState, hidden_above
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
        history_cap: int = 10_000,
        covis_max_neighbours: int = 200,
        popularity_half_life_ms: int = 7 * 24 * 3600 * 1000,
    ) -> None:
        self._history_cap = history_cap
        self._covis_max = covis_max_neighbours
        self._popularity_half_life_ms = popularity_half_life_ms
        self._states: dict[str, UserState] = {}
        self._seen: dict[str, _SortedSet] = defaultdict(dict)
        self._popularity: _SortedSet = {}
        self._category_popularity: dict[str, _SortedSet] = defaultdict(dict)
        self._covis: dict[str, _SortedSet] = defaultdict(dict)
        self._landmark: int | None = None
        self._responses: dict[str, bytes] = {}

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
            factor = 2.0 ** ((previous_landmark - effects.landmark) / self._popularity_half_life_ms)
            for scores in [self._popularity, *self._category_popularity.values()]:
                for member in scores:
                    scores[member] *= factor
        for user, state in effects.states.items():
            self._states[user] = state.copy()
        for user, items in effects.seen.items():
            seen = self._seen[user]
            for item, score in items.items():
                seen[item] = max(seen.get(item, score), score)
            _cut(seen, self._history_cap, self._history_cap)
        _increment(self._popularity, effects.popularity)
        for (category, item), boost in effects.category_popularity.items():
            _increment(self._category_popularity[category], {item: boost})
        for item, others in effects.covisits.items():
            _increment(self._covis[item], others)
            _cut(self._covis[item], self._covis_max, covis_trim_above(self._covis_max))
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

    def popularity(self, limit: int = 100, category: str | None = None) -> dict[str, float]:
        scores = self._category_popularity.get(category, {}) if category else self._popularity
        return dict(_top(scores, limit))

    def popularity_of(self, item_ids: list[str]) -> dict[str, float]:
        return {item: self._popularity.get(item, 0.0) for item in item_ids}

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
