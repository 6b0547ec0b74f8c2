"""Compiled (numba) inner loop of the interaction processor.

A batch of events is applied in one compiled pass over integer-coded columns (users, items and
(user, item) pairs numbered per batch by `streams/session.py`): the guards, the session-vector
recurrence, the decayed popularity boosts, each user's recent window and the co-visit pairs it
yields, each pair's seen time and collaborative weight. Per
event this was some 150 bytecode operations of Python (function calls, dataclass attributes,
dict updates), about half of the processor's time; compiled, it costs about what the arithmetic
costs, and it runs without the GIL, so the query worker and the Redis writer thread keep going
meanwhile. What needs Python objects (event ids, dicts of the effects) stays in session.py.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

NORM_EPSILON = 1e-12  # a vector shorter than this is the zero vector (no direction left)
# An event's outcome, as `EventColumns.outcomes` holds it. Too late: older than the user's newest
# event minus the allowed lateness; too late (guard cap): within the lateness but older than the
# oldest event id the user's guards still hold (more than MAX_GUARD_IDS events inside it).
APPLIED, TOO_LATE, DUPLICATE, TOO_LATE_CAPPED = 0, 1, 2, 3

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Flags = npt.NDArray[np.bool_]


@dataclass(slots=True)
class EventColumns:
    """The batch's events in consumed order, one entry each."""

    rows: Ints  # the event's user (row of `UserColumns`)
    items: Ints  # the event's item (code of `ItemColumns`)
    times: Ints  # event time, ms
    weights: Floats  # session-vector weight
    known: Flags  # its id is among the user's guard ids from before this batch
    id_codes: Ints  # equal for two events only when user and event id are equal
    pairs: Ints  # its (user, item) pair (row of `PairColumns`)
    outcomes: npt.NDArray[np.int8]  # out: APPLIED, TOO_LATE, DUPLICATE or TOO_LATE_CAPPED


@dataclass(slots=True)
class UserColumns:
    """The batch's users, one row each; updated in place."""

    floors: Ints  # events older than this are too late
    lasts: Ints  # newest applied event time
    vectors: Floats  # session vectors (zero rows for none)
    stepped: Flags  # out: the vector took at least one step
    recent: Ints  # the recent window's item codes, oldest first, `recent_lengths` of each row
    recent_lengths: Ints
    late: Flags  # out: an applied event was older than the user's newest one before it


@dataclass(slots=True)
class ItemColumns:
    """The items the batch names (its events' and its users' recent windows), one code each."""

    vector_rows: Ints  # row in `vectors`, or -1 for an item without a vector
    vectors: npt.NDArray[np.float32]
    popularity: Floats  # out: summed forward-decay boosts
    boosted: Flags  # out: at least one boost


@dataclass(slots=True)
class PairColumns:
    """The batch's (user, item) pairs, one row each; updated in place."""

    collab: Floats  # the user's summed weight of the item (0: not in the history)
    seen: Ints  # out: newest applied event time (0: none)
    touched: Flags  # out: at least one applied event


@dataclass(frozen=True, slots=True)
class KernelSettings:
    allowed_lateness_ms: int
    half_life_ms: int
    popularity_half_life_ms: int
    landmark: int
    covis_window: int
    next_window: int = 0  # transitions: each item after the user's last this many (0: none)


@dataclass(frozen=True, slots=True)
class KernelResult:
    covisits: Ints  # (pairs, 2): one co-visit (item code, other item code) per row
    transitions: Ints  # (pairs, 2): (earlier item code, the item after it) per row
    newest_time: int  # newest applied event time, 0 if none
    vector_missing: int  # applied events whose item has no vector


def apply_events(
    events: EventColumns,
    users: UserColumns,
    items: ItemColumns,
    pairs: PairColumns,
    settings: KernelSettings,
) -> KernelResult:
    """Apply the events in order: per event, the guards (too late for its user's floor or the
    lateness bound, or a duplicate id), then for an applied one its popularity boost, recent
    window and co-visits (weight > 0), its pair's seen time and collaborative weight (a sum
    that drops to absent, 0, once not positive), and its session-vector step:
    u <- normalize(decay * u + weight * item), where decay = 0.5^(age / half_life) since the
    user's newest event, or, for a late event, its own weight decays by its age instead."""
    _check(events, users, items, pairs)
    # An event pairs with at most every other place of its user's window, both ways, and
    # follows each of them once: the third column says which (0 co-visit, 1 transition).
    covisits = np.empty((max(len(events.rows) * 3 * users.recent.shape[1], 1), 3), np.int64)
    count, newest, missing = _apply_events(  # spelled out: mypy checks them against the loop
        events.rows,
        events.items,
        events.times,
        events.weights,
        events.known,
        events.id_codes,
        events.pairs,
        events.outcomes,
        users.floors,
        users.lasts,
        users.vectors,
        users.stepped,
        users.recent,
        users.recent_lengths,
        users.late,
        items.vector_rows,
        items.vectors,
        items.popularity,
        items.boosted,
        pairs.collab,
        pairs.seen,
        pairs.touched,
        np.array(
            [
                settings.allowed_lateness_ms,
                settings.half_life_ms,
                settings.popularity_half_life_ms,
                settings.landmark,
                settings.covis_window,
                settings.next_window,
            ],
            dtype=np.int64,
        ),
        covisits,
    )
    pairs_found = covisits[:count]
    kinds = pairs_found[:, 2]
    return KernelResult(
        pairs_found[kinds == 0, :2], pairs_found[kinds == 1, :2], int(newest), int(missing)
    )


def _check(
    events: EventColumns, users: UserColumns, items: ItemColumns, pairs: PairColumns
) -> None:
    """The compiled loop does not check bounds: refuse what would read or write outside."""
    if any(len(column) != len(events.rows) for column in _arrays(events)):
        raise ValueError("the event columns must have the same length")
    if len(events.rows) and not (
        _within(events.rows, len(users.floors))
        and _within(events.items, len(items.vector_rows))
        and _within(events.id_codes, len(events.rows))
        and _within(events.pairs, len(pairs.collab))
    ):
        raise IndexError("an event points outside the users, the items, its id codes or pairs")
    if any(len(column) != len(pairs.collab) for column in _arrays(pairs)):
        raise ValueError("the pair columns must have the same length")
    if any(len(column) != len(users.floors) for column in _arrays(users)):
        raise ValueError("the user columns must have the same length")
    recent_used = users.recent[np.arange(users.recent.shape[1]) < users.recent_lengths[:, None]]
    if users.recent_lengths.size and users.recent_lengths.max() >= users.recent.shape[1]:
        raise ValueError("the recent windows need a free column to append into")
    if len(recent_used) and not _within(recent_used, len(items.vector_rows)):
        raise IndexError("a recent window points outside the items")
    if len(items.vector_rows) and items.vector_rows.max() >= len(items.vectors):
        raise IndexError("an item points outside the item vectors")
    if users.vectors.shape[1] != items.vectors.shape[1]:
        raise ValueError(
            f"dimension {users.vectors.shape[1]} != item dimension {items.vectors.shape[1]}"
        )


def _arrays(columns: EventColumns | UserColumns | ItemColumns | PairColumns) -> list[Any]:
    """A group's arrays, for the length checks."""
    return [getattr(columns, field.name) for field in dataclasses.fields(columns)]


def _within(indexes: Ints, size: int) -> bool:
    return bool(indexes.min() >= 0 and indexes.max() < size)


@numba.njit(nogil=True, cache=True)
def _apply_events(  # the groups' arrays flat: numba takes no dataclasses
    rows: Ints,
    event_items: Ints,
    times: Ints,
    weights: Floats,
    known: Flags,
    id_codes: Ints,
    event_pairs: Ints,
    outcomes: npt.NDArray[np.int8],
    floors: Ints,
    lasts: Ints,
    user_vectors: Floats,
    stepped: Flags,
    recent: Ints,
    recent_lengths: Ints,
    late: Flags,
    vector_rows: Ints,
    item_vectors: npt.NDArray[np.float32],
    popularity: Floats,
    boosted: Flags,
    collab: Floats,
    seen: Ints,
    touched: Flags,
    settings: Ints,
    covisits: Ints,
) -> tuple[int, int, int]:
    lateness, half_life, popularity_half_life = settings[0], settings[1], settings[2]
    landmark, window, next_window = settings[3], settings[4], settings[5]
    applied_ids = np.zeros(rows.shape[0], dtype=np.bool_)
    count, newest, missing = 0, 0, 0
    for event in range(rows.shape[0]):
        row, item, time = rows[event], event_items[event], times[event]
        if time < lasts[row] - lateness:
            outcomes[event] = TOO_LATE
            continue
        if time < floors[row]:
            outcomes[event] = TOO_LATE_CAPPED
            continue
        if known[event] or applied_ids[id_codes[event]]:
            outcomes[event] = DUPLICATE
            continue
        outcomes[event] = APPLIED
        applied_ids[id_codes[event]] = True
        newest = max(newest, time)
        weight = weights[event]
        if weight >= 0:
            popularity[item] += 2.0 ** ((time - landmark) / popularity_half_life)
            boosted[item] = True
            if weight != 0 and max(window, next_window) != 0:
                count = _covisit(
                    recent, recent_lengths, row, item, window, next_window, covisits, count
                )
        pair = event_pairs[event]
        seen[pair] = max(seen[pair], time)
        total = collab[pair] + weight
        collab[pair] = total if total > 0 else 0.0
        touched[pair] = True
        if vector_rows[item] < 0:
            missing += 1
        else:
            _step(
                user_vectors,
                row,
                item_vectors,
                vector_rows[item],
                time - lasts[row],
                weight,
                half_life,
            )
            stepped[row] = True
        if time < lasts[row]:
            late[row] = True
        else:
            lasts[row] = time
    return count, newest, missing


@numba.njit(nogil=True, cache=True, inline="always")
def _covisit(
    recent: Ints,
    lengths: Ints,
    row: int,
    item: int,
    window: int,
    next_window: int,
    covisits: Ints,
    count: int,
) -> int:
    """Pair the item with every other item of the user's newest `window` (both ways) and make
    it follow every other item of the newest `next_window`, then move it to the newest end,
    keeping the newest max(window, next_window) items."""
    length, first = lengths[row], -1
    for j in range(length):
        other = recent[row, j]
        if other == item:
            if first < 0:
                first = j
            continue
        if length - j <= window:
            covisits[count, 0], covisits[count, 1], covisits[count, 2] = item, other, 0
            covisits[count + 1, 0], covisits[count + 1, 1], covisits[count + 1, 2] = other, item, 0
            count += 2
        if length - j <= next_window:
            covisits[count, 0], covisits[count, 1], covisits[count, 2] = other, item, 1
            count += 1
    window = max(window, next_window)
    if first >= 0:  # only its first place goes, as list.remove does
        for j in range(first, length - 1):
            recent[row, j] = recent[row, j + 1]
        length -= 1
    recent[row, length] = item
    length += 1
    if length > window:
        for j in range(window):
            recent[row, j] = recent[row, length - window + j]
        length = window
    lengths[row] = length
    return count


@numba.njit(nogil=True, cache=True, inline="always")
def _step(
    vectors: Floats,
    row: int,
    item_vectors: npt.NDArray[np.float32],
    item_row: int,
    age: int,
    weight: float,
    half_life: int,
) -> None:
    decay = 1.0
    if age >= 0:
        decay = 0.5 ** (age / half_life)
    else:  # a late event: the state never rewinds, its contribution decays instead
        weight *= 0.5 ** (-age / half_life)
    squared = 0.0
    for j in range(vectors.shape[1]):
        value = decay * vectors[row, j] + weight * item_vectors[item_row, j]
        vectors[row, j] = value
        squared += value * value
    norm = math.sqrt(squared)
    scale = 1.0 / norm if norm > NORM_EPSILON else 0.0
    for j in range(vectors.shape[1]):
        vectors[row, j] *= scale


def warm_up() -> None:
    """Compile (or load from numba's cache) the loop now, with the types the processor passes,
    so the first batch does not pay for it (seconds, holding the GIL)."""
    one = np.ones(1, dtype=np.int64)
    zero = np.zeros(1, dtype=np.int64)
    apply_events(
        EventColumns(
            zero,
            zero,
            one,
            np.ones(1),
            np.zeros(1, dtype=np.bool_),
            zero,
            zero,
            np.zeros(1, dtype=np.int8),
        ),
        UserColumns(
            zero.copy(),
            zero.copy(),
            np.zeros((1, 2)),
            np.zeros(1, dtype=np.bool_),
            np.zeros((1, 2), dtype=np.int64),
            zero.copy(),
            np.zeros(1, dtype=np.bool_),
        ),
        ItemColumns(
            zero.copy(), np.ones((1, 2), dtype=np.float32), np.zeros(1), np.zeros(1, dtype=np.bool_)
        ),
        PairColumns(np.zeros(1), zero.copy(), np.zeros(1, dtype=np.bool_)),
        KernelSettings(1, 1, 1, 0, 1),
    )
