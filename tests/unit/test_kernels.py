"""The compiled pass on its own. (tests/unit/test_session.py checks it, through `apply_batch`,
against a plain loop over random streams.)"""

from __future__ import annotations

import numpy as np
import pytest

from recstream.streams.kernels import (
    APPLIED,
    DUPLICATE,
    TOO_LATE,
    EventColumns,
    ItemColumns,
    KernelResult,
    KernelSettings,
    PairColumns,
    UserColumns,
    apply_events,
)

SETTINGS = KernelSettings(
    allowed_lateness_ms=100,
    half_life_ms=1000,
    popularity_half_life_ms=1000,
    landmark=0,
    covis_window=2,
)


def _events(
    rows: list[int], items: list[int], times: list[int], weights: list[float]
) -> EventColumns:
    count = len(rows)
    return EventColumns(
        rows=np.array(rows, dtype=np.int64),
        items=np.array(items, dtype=np.int64),
        times=np.array(times, dtype=np.int64),
        weights=np.array(weights, dtype=np.float64),
        known=np.zeros(count, dtype=np.bool_),
        id_codes=np.arange(count, dtype=np.int64),
        pairs=np.array(items, dtype=np.int64),  # one user per test: the item is the pair
        outcomes=np.full(count, -1, dtype=np.int8),
    )


def _users(count: int, dimension: int = 2) -> UserColumns:
    return UserColumns(
        floors=np.zeros(count, dtype=np.int64),
        lasts=np.zeros(count, dtype=np.int64),
        vectors=np.zeros((count, dimension)),
        stepped=np.zeros(count, dtype=np.bool_),
        recent=np.zeros((count, 3), dtype=np.int64),
        recent_lengths=np.zeros(count, dtype=np.int64),
        late=np.zeros(count, dtype=np.bool_),
    )


def _items(vectors: list[list[float]], missing: int = 0) -> ItemColumns:
    count = len(vectors) + missing
    return ItemColumns(
        vector_rows=np.array([*range(len(vectors)), *[-1] * missing], dtype=np.int64),
        vectors=np.array(vectors, dtype=np.float32),
        popularity=np.zeros(count),
        boosted=np.zeros(count, dtype=np.bool_),
    )


def _pairs(count: int) -> PairColumns:
    return PairColumns(
        collab=np.zeros(count), seen=np.zeros(count, np.int64), touched=np.zeros(count, np.bool_)
    )


def _run(
    events: EventColumns, users: UserColumns, items: ItemColumns, pairs: PairColumns | None = None
) -> KernelResult:
    pairs = pairs if pairs is not None else _pairs(len(items.vector_rows))
    return apply_events(events, users, items, pairs, SETTINGS)


def test_guards_steps_popularity_and_windows_of_one_user() -> None:
    events = _events(
        rows=[0, 0, 0, 0, 0, 0],
        items=[0, 1, 0, 1, 2, 1],
        times=[1000, 2000, 1950, 1899, 1990, 3000],
        weights=[1.0, 2.0, 1.0, -1.0, 1.0, 1.0],
    )
    events.id_codes[4] = 0  # the same user and id as the first event
    users, items, pairs = _users(1), _items([[1.0, 0.0], [0.0, 1.0]], missing=1), _pairs(3)
    result = _run(events, users, items, pairs)
    # 1950 is late, within 100 ms of the newest (2000): applied; 1899 is not
    assert events.outcomes.tolist() == [APPLIED, APPLIED, APPLIED, TOO_LATE, DUPLICATE, APPLIED]
    assert (result.newest_time, result.vector_missing) == (3000, 0)
    assert users.lasts.tolist() == [3000]
    assert users.late.tolist() == [True]  # 1950 after 2000
    first, second = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    expected = first
    expected = _unit(0.5 * expected + 2.0 * second)
    expected = _unit(expected + 0.5 ** (50 / 1000) * first)  # late: its own weight decays
    expected = _unit(0.5 * expected + second)  # 1000 ms after the newest, 2000
    np.testing.assert_allclose(users.vectors[0], expected, atol=1e-7)
    assert users.stepped.tolist() == [True]
    np.testing.assert_allclose(items.popularity, [2.0 + 2.0**1.95, 2.0**2 + 2.0**3, 0.0])
    assert items.boosted.tolist() == [True, True, False]
    # window 2: [0], [0, 1], [1, 0] (item 0 moved to the newest end), [0, 1]
    assert users.recent[0, : users.recent_lengths[0]].tolist() == [0, 1]
    assert sorted(map(tuple, result.covisits.tolist())) == [(0, 1)] * 3 + [(1, 0)] * 3
    assert pairs.touched.tolist() == [True, True, False]
    assert pairs.seen.tolist() == [1950, 3000, 0]
    assert pairs.collab.tolist() == [2.0, 3.0, 0.0]


def test_a_collaborative_weight_that_is_no_longer_positive_starts_again_from_absent() -> None:
    events = _events(rows=[0, 0, 0], items=[0, 0, 0], times=[1, 2, 3], weights=[-1.0, 0.5, 2.0])
    pairs = _pairs(1)
    pairs.collab[0] = 0.75
    _run(events, _users(1), _items([[1.0, 0.0]]), pairs)
    assert pairs.collab.tolist() == [2.5]  # 0.75 - 1 dropped it: 0 + 0.5 + 2
    pairs.collab[0] = 0.75
    _run(_events([0], [0], [9], [-0.75]), _users(1), _items([[1.0, 0.0]]), pairs)
    assert pairs.collab.tolist() == [0.0]


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def test_an_item_without_a_vector_counts_but_takes_no_step() -> None:
    events = _events(rows=[0, 1], items=[1, 0], times=[10, 10], weights=[1.0, 1.0])
    users, items = _users(2), _items([[1.0, 0.0]], missing=1)
    result = _run(events, users, items)
    assert result.vector_missing == 1
    assert users.stepped.tolist() == [False, True]
    assert users.late.tolist() == [False, False]
    assert items.boosted.tolist() == [True, True]


def test_a_step_that_cancels_the_vector_leaves_the_zero_vector() -> None:
    users, items = _users(1), _items([[1.0, 0.0]])
    users.vectors[0] = [1.0, 0.0]
    users.lasts[0] = 10
    _run(_events(rows=[0], items=[0], times=[10], weights=[-1.0]), users, items)
    assert users.vectors.tolist() == [[0.0, 0.0]]
    _run(_events(rows=[0], items=[0], times=[10], weights=[2.0]), users, items)
    assert users.vectors.tolist() == [[1.0, 0.0]]


def test_columns_that_do_not_fit_are_refused_before_anything_is_applied() -> None:
    users, items = _users(2), _items([[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="same length"):
        _run(_events([0, 1], [0, 0], [1, 2], [1.0]), users, items)
    with pytest.raises(IndexError, match="outside"):
        _run(_events([2], [0], [1], [1.0]), users, items)
    with pytest.raises(IndexError, match="outside"):
        _run(_events([0], [-1], [1], [1.0]), users, items)
    repeated = _events([0], [0], [1], [1.0])
    repeated.id_codes[0] = 1
    with pytest.raises(IndexError, match="outside"):
        _run(repeated, users, items)
    users.recent_lengths[1] = 3
    with pytest.raises(ValueError, match="free column"):
        _run(_events([0], [0], [1], [1.0]), users, items)
    users.recent_lengths[1] = 1
    users.recent[1, 0] = 7
    with pytest.raises(IndexError, match="recent window"):
        _run(_events([0], [0], [1], [1.0]), users, items)
    users.recent[1, 0] = 0
    outside_pairs = _events([0], [0], [1], [1.0])
    outside_pairs.pairs[0] = 5
    with pytest.raises(IndexError, match="pairs"):
        _run(outside_pairs, users, items)
    with pytest.raises(ValueError, match="pair columns"):
        uneven = PairColumns(np.zeros(2), np.zeros(1, np.int64), np.zeros(2, np.bool_))
        _run(_events([0], [0], [1], [1.0]), users, items, uneven)
    with pytest.raises(ValueError, match="dimension"):
        _run(_events([0], [0], [1], [1.0]), _users(2, dimension=3), items)
    assert not users.vectors.any() and not users.stepped.any()  # nothing was applied
