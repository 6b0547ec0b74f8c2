"""The definition of what one interaction event does to a user's state, written plainly: one
event at a time, in Python (`apply_event`), and a batch as a loop over it. The processor's
compiled pass (recstream.streams.kernels via session.apply_batch) is checked against this in
tests/unit/test_kernels.py and test_session.py; read this module to know what the fast one does.
Also the session-vector formula u <- normalize(decay(dt) * u + w * item) on its own."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from recstream.core.state import BatchEffects, UserState
from recstream.schemas.events import InteractionEvent
from recstream.streams.session import MAX_COLLAB_ITEMS, MAX_GUARD_IDS, SessionConfig


def reference_vector(
    events: Sequence[InteractionEvent],
    vectors: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    half_life_ms: float,
) -> np.ndarray:
    """Events of one user in time order (no late events)."""
    u = np.zeros(len(next(iter(vectors.values()))), dtype=np.float64)
    last = None
    for event in events:
        if event.item_id not in vectors:
            continue
        decay = 0.0 if last is None else 0.5 ** ((event.event_time - last) / half_life_ms)
        w = (
            ((event.value or 0.0) - 3.0)
            if event.event_type == "rating"
            else weights[event.event_type]
        )
        x = decay * u + w * vectors[event.item_id].astype(np.float64)
        norm = float(np.sqrt((x * x).sum()))
        u = x / norm if norm > 1e-12 else np.zeros_like(x)
        last = event.event_time
    return u


def reference_apply_batch(
    events: Sequence[InteractionEvent],
    states: Mapping[str, UserState],
    item_vectors: Mapping[str, np.ndarray],
    item_categories: Mapping[str, str],
    config: SessionConfig,
    model: str,
    landmark: int,
) -> BatchEffects:
    """`session.apply_batch` as a plain loop of `apply_event`: the oracle the compiled pass is
    checked against. The per-user steps run once per batch, as in the processor."""
    effects = BatchEffects(landmark=landmark)
    for event in events:
        state = effects.states.get(event.user_id)
        if state is None:
            state = states.get(event.user_id, UserState()).copy()
            if state.model != model:
                state.vector, state.model = None, model
            effects.states[event.user_id] = state
        apply_event(effects, state, event, item_vectors, config)
    effects.category_popularity = {
        (category, item): boost
        for item, boost in effects.popularity.items()
        if (category := item_categories.get(item))
    }
    for state in effects.states.values():
        _settle_guards(state, config)
        _trim_collab(state)
    return effects


def _outcome(state: UserState, event: InteractionEvent, config: SessionConfig) -> str:
    if event.event_time < state.last_time - config.allowed_lateness_ms:
        return "too_late"
    if event.event_time < state.floor:
        return "too_late_guard_cap"
    return "duplicate" if event.event_id in state.guard_ids else "applied"


def apply_event(
    effects: BatchEffects,
    state: UserState,
    event: InteractionEvent,
    item_vectors: Mapping[str, np.ndarray],
    config: SessionConfig,
) -> str:
    """One event on its user's state: its outcome (applied, duplicate, too_late,
    too_late_guard_cap), and when applied, the session vector, counters, history, co-visits,
    popularity and guards it changes."""
    outcome = _outcome(state, event, config)
    effects.outcomes[outcome] += 1
    if outcome != "applied":
        return outcome
    weight, item, time_ = config.weight(event), event.item_id, event.event_time
    seen = effects.seen.setdefault(event.user_id, {})
    seen[item] = max(seen.get(item, 0), time_)
    effects.newest_time = max(effects.newest_time, time_)
    if weight >= 0:
        boost = 2.0 ** ((time_ - effects.landmark) / config.popularity_half_life_ms)
        effects.popularity[item] = effects.popularity.get(item, 0.0) + boost
        if weight != 0 and max(config.covis_window, config.next_window) != 0:
            _covisit(effects, state, item, config.covis_window, config.next_window)
    total = state.collab_items.get(item, 0.0) + weight
    if total > 0:
        state.collab_items[item] = total
    else:
        state.collab_items.pop(item, None)
    if item in item_vectors:
        _step(state, item_vectors[item], event.event_time, weight, config.half_life_ms)
    else:
        effects.vector_missing += 1
    state.count += 1
    state.last_time = max(state.last_time, time_)
    state.guard_ids[event.event_id] = time_
    effects.new_guards.setdefault(event.user_id, {})[event.event_id] = time_
    return outcome


def _covisit(
    effects: BatchEffects, state: UserState, item: str, window: int, next_window: int
) -> None:
    """Co-visits with the other items of the newest `window`, both ways; the item follows
    every other item of the newest `next_window`."""
    recent = state.recent_items
    for other in (o for o in recent[max(0, len(recent) - window) :] if o != item):
        mine = effects.covisits.setdefault(item, {})
        mine[other] = mine.get(other, 0.0) + 1.0
        theirs = effects.covisits.setdefault(other, {})
        theirs[item] = theirs.get(item, 0.0) + 1.0
    for other in (o for o in recent[max(0, len(recent) - next_window) :] if o != item):
        after = effects.transitions.setdefault(other, {})
        after[item] = after.get(item, 0.0) + 1.0
    if item in recent:
        recent.remove(item)
    recent.append(item)
    del recent[: -max(window, next_window)]


def _step(state: UserState, item: np.ndarray, time_: int, weight: float, half_life: int) -> None:
    age = time_ - state.last_time
    decay = 1.0
    if age >= 0:
        decay = 0.5 ** (age / half_life)
    else:
        weight *= 0.5 ** (-age / half_life)
    u = np.zeros(len(item)) if state.vector is None else state.vector.astype(np.float64)
    x = decay * u + weight * item.astype(np.float64)
    norm = float(np.sqrt((x * x).sum()))
    state.vector = (x / norm if norm > 1e-12 else np.zeros_like(x)).astype(np.float32)


def _settle_guards(state: UserState, config: SessionConfig) -> None:
    floor = max(state.floor, state.last_time - config.allowed_lateness_ms)
    if len(state.guard_ids) > MAX_GUARD_IDS:
        times = sorted(state.guard_ids.values())
        floor = max(floor, times[len(times) - MAX_GUARD_IDS - 1] + 1)
    state.floor = floor
    state.guard_ids = {k: t for k, t in state.guard_ids.items() if t >= floor}


def _trim_collab(state: UserState) -> None:
    """The MAX_COLLAB_ITEMS strongest items, ties by item id."""
    ranked = sorted(state.collab_items.items(), key=lambda p: (p[1], p[0]), reverse=True)
    state.collab_items = dict(ranked[:MAX_COLLAB_ITEMS])
