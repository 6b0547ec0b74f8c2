"""Per-user session state and how a batch of interaction events changes it. Pure: values in,
values out; no Kafka, Redis or index here.

Session vector: u <- normalize(decay(dt) * u + w(event) * item_vector),
decay(dt) = 0.5^(dt/half_life).
An event older than the user's newest (but within the allowed lateness) is folded in with its
contribution decayed by its age instead, so a late event never rewinds the state.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from recstream.schemas.events import InteractionEvent
from recstream.stores.vector_index import Vector
from recstream.streams.collab import CollabModel
from recstream.streams.kernels import fold_steps

MAX_GUARD_IDS = 1024
MAX_COLLAB_ITEMS = 500  # a user's collaborative history keeps its strongest items
POPULARITY_REBASE_HALF_LIVES = 64  # forward-decay exponent bound before the landmark moves


@dataclass(frozen=True, slots=True)
class SessionConfig:
    weights: Mapping[str, float]
    rating_center: float = 3.0
    rating_weight_per_point: float = 1.0
    half_life_ms: int = 24 * 3600 * 1000
    allowed_lateness_ms: int = 3600 * 1000
    covis_window: int = 5
    popularity_half_life_ms: int = 7 * 24 * 3600 * 1000

    def weight(self, event: InteractionEvent) -> float:
        """Session-vector weight: by event type, or by a rating's distance from the centre."""
        if event.event_type == "rating":
            return (float(event.value or 0.0) - self.rating_center) * self.rating_weight_per_point
        return self.weights[event.event_type]


@dataclass(slots=True)
class UserState:
    vector: Vector | None = None
    last_time: int = 0  # newest applied event time, ms
    floor: int = 0  # events older than this are too late to apply
    count: int = 0
    guard_ids: dict[str, int] = field(default_factory=dict)  # event id -> event time
    recent_items: list[str] = field(default_factory=list)  # newest last, for co-visitation
    model: str = ""  # collection whose vectors built `vector`
    # The collaborative side (streams/collab.py): r_u, and the factor folded in from it.
    collab_items: dict[str, float] = field(default_factory=dict)  # item -> summed weight
    collab_vector: Vector | None = None
    collab_version: int = 0  # model version `collab_vector` was folded in against

    def copy(self) -> UserState:
        return UserState(
            self.vector,
            self.last_time,
            self.floor,
            self.count,
            dict(self.guard_ids),
            list(self.recent_items),
            self.model,
            dict(self.collab_items),
            self.collab_vector,
            self.collab_version,
        )


@dataclass
class BatchEffects:
    """Everything one batch changes, ready for a store to write at once."""

    states: dict[str, UserState] = field(default_factory=dict)
    seen: dict[str, dict[str, int]] = field(default_factory=dict)  # user -> item -> time
    new_guards: dict[str, dict[str, int]] = field(default_factory=dict)  # user -> event id -> time
    popularity: dict[str, float] = field(default_factory=dict)
    category_popularity: dict[tuple[str, str], float] = field(default_factory=dict)
    covisits: dict[str, dict[str, float]] = field(default_factory=dict)  # item -> other -> n
    outcomes: Counter[str] = field(default_factory=Counter)
    vector_missing: int = 0
    fold_in_seconds: float = 0.0  # time spent on collaborative fold-ins (a metric)
    newest_time: int = 0
    landmark: int = 0


@dataclass(slots=True)
class _VectorSteps:
    """The batch's session-vector steps in event order, as columns (one compiled pass applies
    them: streams/kernels.py)."""

    users: list[str] = field(default_factory=list)
    decays: list[float] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    items: list[str] = field(default_factory=list)

    def add(self, state: UserState, event: InteractionEvent, weight: float, half_life: int) -> None:
        """The step of an applied event: the state decays by the time since its newest event; a
        late event's own weight decays by its age instead (the state never rewinds)."""
        age = event.event_time - state.last_time
        decay = 1.0
        if age >= 0:
            decay = 0.5 ** (age / half_life)
        else:
            weight *= 0.5 ** (-age / half_life)
        self.users.append(event.user_id)
        self.decays.append(decay)
        self.weights.append(weight)
        self.items.append(event.item_id)


def popularity_landmark(current: int | None, newest_time: int, half_life_ms: int) -> int:
    """The forward-decay landmark to use: moved forward once scores would grow too large."""
    if current is None:
        return newest_time
    if newest_time - current > POPULARITY_REBASE_HALF_LIVES * half_life_ms:
        return newest_time
    return current


def apply_batch(
    events: Sequence[InteractionEvent],
    states: Mapping[str, UserState],
    item_vectors: Mapping[str, Vector],
    item_categories: Mapping[str, str],
    config: SessionConfig,
    model: str,
    dimension: int,
    landmark: int,
    collab: CollabModel | None = None,
) -> BatchEffects:
    """Apply events (in consumed order) to copies of the users' states; with a collaborative
    model, every user whose history changed gets a fresh fold-in."""
    effects = BatchEffects(landmark=landmark)
    steps = _VectorSteps()
    for event in events:
        state = effects.states.get(event.user_id)
        if state is None:
            state = states.get(event.user_id, UserState()).copy()
            if state.model != model:  # vectors of another model version never mix
                state.vector, state.model = None, model
            effects.states[event.user_id] = state
        outcome = _guard(state, event, config)
        effects.outcomes[outcome] += 1
        if outcome != "applied":
            continue
        weight = config.weight(event)
        _record(effects, state, event, weight, config)
        _add_collab(state, event.item_id, weight)
        if event.item_id in item_vectors:
            steps.add(state, event, weight, config.half_life_ms)
        else:
            effects.vector_missing += 1
        _advance(state, event)
        effects.new_guards.setdefault(event.user_id, {})[event.event_id] = event.event_time
    effects.category_popularity = _category_popularity(effects.popularity, item_categories)
    for state in effects.states.values():
        _settle_guards(state, config)
        _trim_collab(state)
    _apply_vector_steps(effects.states, steps, item_vectors, dimension)
    if collab is not None:
        started = time.perf_counter()
        _fold_in(effects.states, collab)
        effects.fold_in_seconds = time.perf_counter() - started
    return effects


def user_groups(
    events: Sequence[InteractionEvent], max_events: int
) -> list[list[InteractionEvent]]:
    """The events in groups of whole users (each user's events in one group, in their order),
    users taken in order of first appearance, a group closed once it holds max_events. Every
    effect of an event belongs to its user's group, so each group's effects can be stored
    atomically on their own."""
    if len(events) <= max_events:
        return [list(events)]
    group_of: dict[str, int] = {}
    filled, group = 0, 0
    for user, count in Counter(e.user_id for e in events).items():
        if filled >= max_events:
            filled, group = 0, group + 1
        group_of[user] = group
        filled += count
    groups: list[list[InteractionEvent]] = [[] for _ in range(group + 1)]
    for event in events:
        groups[group_of[event.user_id]].append(event)
    return groups


def _add_collab(state: UserState, item_id: str, weight: float) -> None:
    history = state.collab_items
    total = history.get(item_id, 0.0) + weight
    if total > 0:
        history[item_id] = total
    else:
        history.pop(item_id, None)


def _trim_collab(state: UserState) -> None:
    """Once per user and batch (not per event: that was a scan of 500 items per event for
    heavy users): keep the MAX_COLLAB_ITEMS strongest items, ties by item id."""
    history = state.collab_items
    if len(history) > MAX_COLLAB_ITEMS:
        strongest = heapq.nlargest(MAX_COLLAB_ITEMS, history.items(), key=lambda p: (p[1], p[0]))
        state.collab_items = dict(strongest)


def _fold_in(states: Mapping[str, UserState], collab: CollabModel) -> None:
    """Solve each changed user's ALS least squares against the model's item factors."""
    changed = list(states.values())
    for state, factor in zip(
        changed, collab.fold_in_many([s.collab_items for s in changed]), strict=True
    ):
        state.collab_vector = factor
        state.collab_version = collab.version


def _guard(state: UserState, event: InteractionEvent, config: SessionConfig) -> str:
    if event.event_time < max(state.floor, state.last_time - config.allowed_lateness_ms):
        return "too_late"
    if event.event_id in state.guard_ids:
        return "duplicate"
    return "applied"


def _record(
    effects: BatchEffects,
    state: UserState,
    event: InteractionEvent,
    weight: float,
    config: SessionConfig,
) -> None:
    """Seen history, popularity and co-visitation of one applied event. (Category popularity
    is the same sums per item: `_category_popularity` derives it once per batch.)"""
    item, time_ = event.item_id, event.event_time
    seen = effects.seen.setdefault(event.user_id, {})
    seen[item] = max(seen.get(item, 0), time_)
    if time_ > effects.newest_time:
        effects.newest_time = time_
    if weight < 0:
        return
    boost = 2.0 ** ((time_ - effects.landmark) / config.popularity_half_life_ms)
    effects.popularity[item] = effects.popularity.get(item, 0.0) + boost
    if weight == 0 or config.covis_window == 0:
        return
    recent = state.recent_items
    others = [other for other in recent if other != item]
    if others:
        covisits = effects.covisits
        mine = covisits.setdefault(item, {})
        for other in others:
            mine[other] = mine.get(other, 0.0) + 1.0
            theirs = covisits.setdefault(other, {})
            theirs[item] = theirs.get(item, 0.0) + 1.0
    if len(others) < len(recent):
        recent.remove(item)
    recent.append(item)
    del recent[: -config.covis_window]


def _category_popularity(
    popularity: Mapping[str, float], item_categories: Mapping[str, str]
) -> dict[tuple[str, str], float]:
    """Every boost an item got also counts in its category: the same sum per item."""
    return {
        (category, item): boost
        for item, boost in popularity.items()
        if (category := item_categories.get(item))
    }


def _advance(state: UserState, event: InteractionEvent) -> None:
    state.count += 1
    state.last_time = max(state.last_time, event.event_time)
    state.guard_ids[event.event_id] = event.event_time


def _settle_guards(state: UserState, config: SessionConfig) -> None:
    """Once per user and batch: raise the floor to the lateness bound and keep at most
    MAX_GUARD_IDS ids (everything at or before the newest dropped id becomes too late)."""
    floor = max(state.floor, state.last_time - config.allowed_lateness_ms)
    if len(state.guard_ids) > MAX_GUARD_IDS:
        times = sorted(state.guard_ids.values())
        floor = max(floor, times[len(times) - MAX_GUARD_IDS - 1] + 1)
    state.floor = floor
    if state.guard_ids and min(state.guard_ids.values()) < floor:
        state.guard_ids = {k: t for k, t in state.guard_ids.items() if t >= floor}


def _apply_vector_steps(
    states: dict[str, UserState],
    steps: _VectorSteps,
    item_vectors: Mapping[str, Vector],
    dimension: int,
) -> None:
    """Every step, in event order, on one matrix of the stepped users' vectors."""
    if not steps.users:
        return
    row_of: dict[str, int] = {}
    rows = [row_of.setdefault(user, len(row_of)) for user in steps.users]
    item_row_of: dict[str, int] = {}
    item_rows = [item_row_of.setdefault(item, len(item_row_of)) for item in steps.items]
    matrix = np.zeros((len(row_of), dimension), dtype=np.float64)
    for user, row in row_of.items():
        vector = states[user].vector
        if vector is not None:
            matrix[row] = vector
    items = np.stack([np.asarray(item_vectors[i], dtype=np.float32) for i in item_row_of])
    fold_steps(
        matrix,
        np.array(rows, dtype=np.int64),
        np.array(steps.decays, dtype=np.float64),
        np.array(steps.weights, dtype=np.float64),
        np.array(item_rows, dtype=np.int64),
        items,
    )
    for user, row in row_of.items():
        states[user].vector = matrix[row].astype(np.float32)
