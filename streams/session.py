"""Per-user session state and how a batch of interaction events changes it. Pure: values in,
values out; no Kafka, Redis or index here.

Session vector: u <- normalize(decay(dt) * u + w(event) * item_vector),
decay(dt) = 0.5^(dt/half_life).
An event older than the user's newest (but within the allowed lateness) is folded in with its
contribution decayed by its age instead, so a late event never rewinds the state.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import operator
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recstream.core.collab import CollabModel
from recstream.core.index import Vector
from recstream.core.state import SEEN_FOR_A_WHILE, BatchEffects, UserState
from recstream.schemas.events import InteractionEvent
from recstream.streams.kernels import (
    APPLIED,
    DUPLICATE,
    TOO_LATE,
    TOO_LATE_CAPPED,
    EventColumns,
    ItemColumns,
    KernelSettings,
    PairColumns,
    UserColumns,
    apply_events,
)

MAX_GUARD_IDS = 1024
MAX_COLLAB_ITEMS = 500  # a user's collaborative history keeps its strongest items
POPULARITY_REBASE_HALF_LIVES = 64  # forward-decay exponent bound before the landmark moves


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    """How events change a user's state. Built from the settings (recstream.compose
    .session_config), whose fields hold the defaults: none are repeated here."""

    weights: Mapping[str, float]
    rating_center: float
    rating_weight_per_point: float
    half_life_ms: int
    allowed_lateness_ms: int
    covis_window: int
    next_window: int  # transitions: an item follows each of the user's last this many (0: none)
    popularity_half_life_ms: int
    seen_hide_ms: Mapping[str, int]  # event type -> how long it hides its item (absent: for good)
    trending_half_life_ms: int

    @property
    def landmark_half_life_ms(self) -> int:
        """The half-life the landmark moves by: the shorter one, whose scores grow fastest."""
        return min(self.popularity_half_life_ms, self.trending_half_life_ms)

    def weight(self, event: InteractionEvent) -> float:
        """Session-vector weight: by event type, or by a rating's distance from the centre."""
        if event.event_type == "rating":
            return (float(event.value or 0.0) - self.rating_center) * self.rating_weight_per_point
        return self.weights[event.event_type]


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
    model, every user whose history changed gets a fresh fold-in.

    The per-event arithmetic and bookkeeping run in one compiled pass over integer-coded
    columns (`kernels.apply_events`); what is left here is per user or per (user, item) pair."""
    effects = BatchEffects(landmark=landmark)
    if not events:
        return effects
    batch = _Batch(events, states, model)
    effects.states = batch.states
    items = _ItemCodes(batch, item_vectors, dimension)
    users = batch.user_columns(items, dimension, max(config.covis_window, config.next_window))
    pairs = _Pairs(batch, items)
    columns = batch.event_columns(items, pairs, config)
    result = apply_events(
        columns,
        users,
        items.columns,
        pairs.columns,
        KernelSettings(
            config.allowed_lateness_ms,
            config.half_life_ms,
            config.popularity_half_life_ms,
            landmark,
            config.covis_window,
            config.next_window,
        ),
    )
    applied = np.flatnonzero(columns.outcomes == APPLIED)
    effects.outcomes = _outcome_counts(columns.outcomes)
    effects.newest_time, effects.vector_missing = result.newest_time, result.vector_missing
    batch.record(effects, applied, columns)
    if config.seen_hide_ms:
        _seen_for_a_while(events, applied, columns, pairs.columns.seen, config.seen_hide_ms)
    batch.record_pairs(effects, pairs)
    batch.settle(users, items.names, effects.new_guards, config)
    effects.popularity = items.popularity()
    effects.trending = _trending_boosts(
        applied, columns, items.names, landmark, config.trending_half_life_ms
    )
    effects.category_popularity = _category_popularity(effects.popularity, item_categories)
    effects.covisits = _covisit_counts(result.covisits, items.names)
    effects.transitions = _covisit_counts(result.transitions, items.names)
    if collab is not None:
        started = time.perf_counter()
        _fold_in(effects.states, collab)
        effects.fold_in_seconds = time.perf_counter() - started
    return effects


class _Batch:
    """The batch's events as columns, its users numbered in order of first appearance, and a
    working copy of each user's state."""

    def __init__(
        self, events: Sequence[InteractionEvent], states: Mapping[str, UserState], model: str
    ) -> None:
        self.items = [event.item_id for event in events]
        self.ids = [event.event_id for event in events]
        self.times = [event.event_time for event in events]
        self.events = events
        row_of: dict[str, int] = {}
        self.rows = [row_of.setdefault(event.user_id, len(row_of)) for event in events]
        self.row_codes = np.array(self.rows, dtype=np.int64)  # the same, for numpy
        self.states = {user: _working_copy(states.get(user), model) for user in row_of}
        self.user_names = list(self.states)  # by row
        self.row_states = list(self.states.values())

    def event_columns(
        self, items: _ItemCodes, pairs: _Pairs, config: SessionConfig
    ) -> EventColumns:
        guards = [state.guard_ids for state in self.row_states]
        count = len(self.rows)
        return EventColumns(
            rows=self.row_codes,
            items=items.code_array,
            times=np.array(self.times, dtype=np.int64),
            weights=np.array(_weights(self.events, config), dtype=np.float64),
            known=np.array(
                [
                    event_id in guards[row]
                    for event_id, row in zip(self.ids, self.rows, strict=True)
                ],
                dtype=np.bool_,
            ),
            id_codes=self._id_codes(),
            pairs=pairs.codes,
            outcomes=np.zeros(count, dtype=np.int8),
        )

    def _id_codes(self) -> npt.NDArray[np.int64]:
        """Equal codes for events of the same user and id (a duplicate within the batch)."""
        if len(set(self.ids)) == len(self.ids):  # the usual case: every id once
            return np.arange(len(self.ids), dtype=np.int64)
        code_of: dict[tuple[int, str], int] = {}
        return np.array(
            [
                code_of.setdefault(pair, len(code_of))
                for pair in zip(self.rows, self.ids, strict=True)
            ],
            dtype=np.int64,
        )

    def user_columns(self, items: _ItemCodes, dimension: int, window: int) -> UserColumns:
        """Placed with one numpy assignment each, not one per user."""
        count = len(self.row_states)
        lengths = np.array([len(codes) for codes in items.recent_codes], dtype=np.int64)
        recent = np.zeros((count, max(window, int(lengths.max())) + 1), dtype=np.int64)
        starts = np.cumsum(lengths) - lengths
        places = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)
        recent[np.repeat(np.arange(count), lengths), places] = list(
            itertools.chain.from_iterable(items.recent_codes)
        )
        vectors = np.zeros((count, dimension), dtype=np.float64)
        held = [(row, s.vector) for row, s in enumerate(self.row_states) if s.vector is not None]
        if held:
            vectors[[row for row, _ in held]] = np.array([vector for _, vector in held])
        return UserColumns(
            floors=np.array([s.floor for s in self.row_states], dtype=np.int64),
            lasts=np.array([s.last_time for s in self.row_states], dtype=np.int64),
            vectors=vectors,
            stepped=np.zeros(count, dtype=np.bool_),
            recent=recent,
            recent_lengths=lengths,
            late=np.zeros(count, dtype=np.bool_),
        )

    def record(
        self, effects: BatchEffects, applied: npt.NDArray[np.intp], columns: EventColumns
    ) -> None:
        """The applied events' guard ids (per user, in event order) and the users' counts."""
        order = applied[np.argsort(columns.rows[applied], kind="stable")]
        ids = [self.ids[event] for event in order.tolist()]
        times = columns.times[order].tolist()
        rows = columns.rows[order]
        row_list = rows.tolist()
        for start, end in _runs(rows):
            user = self.user_names[row_list[start]]
            new = dict(zip(ids[start:end], times[start:end], strict=True))
            effects.new_guards[user] = new
        counts = np.bincount(rows, minlength=len(self.row_states))
        for state, count in zip(self.row_states, counts.tolist(), strict=True):
            state.count += count

    def record_pairs(self, effects: BatchEffects, pairs: _Pairs) -> None:
        """The seen history and collaborative history of the pairs the applied events touched."""
        touched = np.flatnonzero(pairs.columns.touched)
        rows = pairs.rows[touched]
        names = [pairs.names[pair] for pair in touched.tolist()]
        seen = pairs.columns.seen[touched].tolist()
        totals = pairs.columns.collab[touched].tolist()
        row_list = rows.tolist()
        for start, end in _runs(rows):
            user = self.user_names[row_list[start]]
            effects.seen[user] = dict(zip(names[start:end], seen[start:end], strict=True))
            history = self.states[user].collab_items
            for name, total in zip(names[start:end], totals[start:end], strict=True):
                if total > 0:
                    history[name] = total
                else:
                    history.pop(name, None)

    def settle(
        self,
        users: UserColumns,
        item_names: list[str],
        new_guards: Mapping[str, dict[str, int]],
        config: SessionConfig,
    ) -> None:
        """Carry the compiled pass's per-user results back into the states; settle guards and
        trim collaborative histories once per user."""
        lasts, lengths = users.lasts.tolist(), users.recent_lengths.tolist()
        stepped, late = users.stepped.tolist(), users.late.tolist()
        recent = users.recent.tolist()  # once: a numpy call per user cost more than its work
        for row, state in enumerate(self.row_states):
            state.last_time = lasts[row]
            state.recent_items = [item_names[c] for c in recent[row][: lengths[row]]]
            if stepped[row]:
                state.vector = users.vectors[row].astype(np.float32)
            new = new_guards.get(self.user_names[row], {})
            if state.guards_in_time_order and not late[row]:
                _settle_ordered_guards(state, new, config)
            else:
                _settle_guards(state, new, config)
            _trim_collab(state)


class _Pairs:
    """The batch's (user, item) pairs, numbered in (user row, item code) order, with each
    user's collaborative weight of the item before the batch."""

    def __init__(self, batch: _Batch, items: _ItemCodes) -> None:
        width = len(items.names)
        keys = batch.row_codes * width + items.code_array
        unique, self.codes = np.unique(keys, return_inverse=True)
        self.rows, item_codes = np.divmod(unique, width)
        self.names = [items.names[code] for code in item_codes.tolist()]
        states = batch.row_states
        before = [
            states[row].collab_items.get(name, 0.0)
            for row, name in zip(self.rows.tolist(), self.names, strict=True)
        ]
        self.columns = PairColumns(
            collab=np.array(before, dtype=np.float64),
            seen=np.zeros(len(unique), dtype=np.int64),
            touched=np.zeros(len(unique), dtype=np.bool_),
        )


class _ItemCodes:
    """The items the batch names, numbered: its events' in order of first appearance, then
    those only in its users' recent windows."""

    def __init__(self, batch: _Batch, item_vectors: Mapping[str, Vector], dimension: int) -> None:
        self._code_of: dict[str, int] = {}
        self.code_array = np.array(self.codes_of(batch.items), dtype=np.int64)  # per event
        self.recent_codes = [self.codes_of(state.recent_items) for state in batch.row_states]
        self.names = list(self._code_of)
        with_vectors = [name for name in self.names if name in item_vectors]
        vector_of = {name: row for row, name in enumerate(with_vectors)}
        vectors = (  # np.array of the list: half of np.stack's per-array cost
            np.array([item_vectors[name] for name in with_vectors], dtype=np.float32)
            if with_vectors
            else np.zeros((1, dimension), dtype=np.float32)
        )
        self.columns = ItemColumns(
            vector_rows=np.array([vector_of.get(n, -1) for n in self.names], dtype=np.int64),
            vectors=vectors,
            popularity=np.zeros(len(self.names), dtype=np.float64),
            boosted=np.zeros(len(self.names), dtype=np.bool_),
        )

    def codes_of(self, items: list[str]) -> list[int]:
        code_of = self._code_of
        return [code_of.setdefault(item, len(code_of)) for item in items]

    def popularity(self) -> dict[str, float]:
        boosts = self.columns.popularity.tolist()
        return {self.names[c]: boosts[c] for c in np.flatnonzero(self.columns.boosted).tolist()}


def _working_copy(state: UserState | None, model: str) -> UserState:
    """A copy to change (the cached state stays as stored until the batch is); vectors of
    another model version never mix."""
    copy = state.copy(share_guard_ids=True) if state is not None else UserState()
    if copy.model != model:
        copy.vector, copy.model = None, model
    return copy


def _trending_boosts(
    applied: npt.NDArray[np.intp],
    columns: EventColumns,
    names: list[str],
    landmark: int,
    half_life_ms: int,
) -> dict[str, float]:
    """Popularity over the trending half-life: the same events as popularity (applied, weight
    not negative), forward-decayed against the same landmark (recstream.core.trending)."""
    counted = applied[columns.weights[applied] >= 0]
    boosts = np.zeros(len(names), dtype=np.float64)
    exponents = (columns.times[counted] - landmark) / half_life_ms
    np.add.at(boosts, columns.items[counted], np.exp2(exponents))
    codes = np.unique(columns.items[counted]).tolist()
    return {names[code]: float(boosts[code]) for code in codes}


def _seen_for_a_while(
    events: Sequence[InteractionEvent],
    applied: npt.NDArray[np.intp],
    columns: EventColumns,
    seen: npt.NDArray[np.int64],
    hide_ms: Mapping[str, int],
) -> None:
    """Each pair's seen score under the seen policy (core.state.SEEN_FOR_A_WHILE), in place of
    the compiled pass's newest time: the largest of its applied events' scores."""
    hide = np.array([hide_ms.get(events[i].event_type, 0) for i in applied.tolist()], np.int64)
    times = columns.times[applied]
    scores = np.where(hide > 0, times + hide - SEEN_FOR_A_WHILE, times)
    seen[:] = np.iinfo(np.int64).min
    np.maximum.at(seen, columns.pairs[applied], scores)


def _weights(events: Sequence[InteractionEvent], config: SessionConfig) -> list[float]:
    by_type = config.weights
    return [
        config.weight(event) if event.event_type == "rating" else by_type[event.event_type]
        for event in events
    ]


def _runs(values: npt.NDArray[np.int64]) -> Iterator[tuple[int, int]]:
    """(start, end) of each run of equal values."""
    starts = (np.flatnonzero(np.diff(values)) + 1).tolist()
    return itertools.pairwise([0, *starts, len(values)]) if len(values) else iter(())


def _outcome_counts(outcomes: npt.NDArray[np.int8]) -> Counter[str]:
    counts = np.bincount(outcomes, minlength=4).tolist()
    names = {
        APPLIED: "applied",
        TOO_LATE: "too_late",
        DUPLICATE: "duplicate",
        TOO_LATE_CAPPED: "too_late_guard_cap",
    }
    return Counter({names[code]: n for code, n in enumerate(counts) if n})


def _covisit_counts(pairs: npt.NDArray[np.int64], names: list[str]) -> dict[str, dict[str, float]]:
    """item -> other item -> how many times, from the compiled pass's pairs (co-visits, or
    transitions: earlier item -> the item after it)."""
    width = len(names)
    unique, counts = np.unique(pairs[:, 0] * width + pairs[:, 1], return_counts=True)
    firsts, others = np.divmod(unique, width)
    other_names = [names[c] for c in others.tolist()]
    weights = counts.astype(np.float64).tolist()
    first_list = firsts.tolist()
    return {
        names[first_list[start]]: dict(zip(other_names[start:end], weights[start:end], strict=True))
        for start, end in _runs(firsts)
    }


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


_STRENGTH = operator.itemgetter(1, 0)  # an item's weight, ties by item id
_TIME = operator.itemgetter(1)  # a guard id's event time


def _trim_collab(state: UserState) -> None:
    """Once per user and batch, not per event (a heavy user's 500 items would be scanned per
    event): keep the MAX_COLLAB_ITEMS strongest items, ties by item id."""
    history = state.collab_items
    if len(history) > MAX_COLLAB_ITEMS:
        # The few weakest go (a heavy user is a few items over each batch): 5x cheaper than
        # ranking the 500 that stay.
        weakest = heapq.nsmallest(len(history) - MAX_COLLAB_ITEMS, history.items(), _STRENGTH)
        for item, _ in weakest:
            del history[item]


def _fold_in(states: Mapping[str, UserState], collab: CollabModel) -> None:
    """Solve each changed user's ALS least squares against the model's item factors."""
    changed = list(states.values())
    for state, factor in zip(
        changed, collab.fold_in_many([s.collab_items for s in changed]), strict=True
    ):
        state.collab_vector = factor
        state.collab_version = collab.version


def _category_popularity(
    popularity: Mapping[str, float], item_categories: Mapping[str, str]
) -> dict[tuple[str, str], float]:
    """Every boost an item got also counts in its category: the same sum per item."""
    return {
        (category, item): boost
        for item, boost in popularity.items()
        if (category := item_categories.get(item))
    }


def _settle_guards(state: UserState, new: dict[str, int], config: SessionConfig) -> None:
    """Once per user and batch: add the ids applied now, raise the floor to the lateness bound
    and keep at most MAX_GUARD_IDS ids (everything at or before the newest dropped id becomes
    too late). The ids are left in time order; the state's old dict is replaced, never changed
    (it may be shared)."""
    merged = itertools.chain(state.guard_ids.items(), new.items())
    in_order = sorted(merged, key=_TIME)  # disjoint: an id already held made its event a duplicate
    floor = max(state.floor, state.last_time - config.allowed_lateness_ms)
    if len(in_order) > MAX_GUARD_IDS:
        floor = max(floor, in_order[len(in_order) - MAX_GUARD_IDS - 1][1] + 1)
    state.floor = floor
    first_kept = bisect.bisect_left(in_order, floor, key=_TIME)
    state.guard_ids = dict(in_order[first_kept:])
    state.guards_in_time_order = True


def _settle_ordered_guards(state: UserState, new: dict[str, int], config: SessionConfig) -> None:
    """`_settle_guards` for ids already in time order, with new ones no older than any of them
    (no late event of the user was applied): the ids to drop are a prefix, found by bisection;
    a C-level copy instead of a sort and a scan of every id."""
    old = state.guard_ids
    times = [*old.values(), *new.values()]
    floor = max(state.floor, state.last_time - config.allowed_lateness_ms)
    if len(times) > MAX_GUARD_IDS:
        floor = max(floor, times[len(times) - MAX_GUARD_IDS - 1] + 1)
    state.floor = floor
    first_kept = bisect.bisect_left(times, floor)
    if first_kept:
        merged = itertools.chain(old.items(), new.items())
        state.guard_ids = dict(itertools.islice(merged, first_kept, None))
    elif new:
        state.guard_ids = old | new
