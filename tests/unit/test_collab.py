"""The collaborative space: ALS fold-in against the closed-form solution, neighbour drift."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from recstream.core.collab import CollabModel
from recstream.schemas.events import InteractionEvent
from recstream.streams.collab import AlsParams, fit_als, neighbour_drift, user_histories
from recstream.worker import single_threaded_blas

ITEMS = [f"i{n}" for n in range(40)]


def _histories(seed: int = 1) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    return {
        f"u{u}": {
            ITEMS[i]: float(rng.choice([0.5, 1.0, 2.0])) for i in rng.choice(40, 8, replace=False)
        }
        for u in range(60)
    }


def test_fold_in_equals_the_closed_form_least_squares_solution() -> None:
    rng = np.random.default_rng(4)
    model = CollabModel(1, ITEMS, rng.normal(size=(40, 6)).astype(np.float32), 0.3, 4.0)
    history = {"i3": 2.0, "i7": 0.5, "i20": 1.0, "unknown": 5.0}
    y = model.factors.astype(np.float64)
    # Dense and independent: C_u = diag(1 + alpha * r), p_u = 1 on the user's items.
    confidence = np.ones(40)
    preference = np.zeros(40)
    for item, r in history.items():
        if item in ITEMS:
            confidence[ITEMS.index(item)] = model.alpha * r
            preference[ITEMS.index(item)] = 1.0
    expected = np.linalg.solve(
        y.T @ np.diag(confidence) @ y + model.regularization * np.eye(6),
        y.T @ np.diag(confidence) @ preference,
    )
    np.testing.assert_allclose(model.fold_in(history), expected, rtol=1e-5, atol=1e-6)
    assert model.fold_in({"unknown": 1.0}) is None
    assert model.fold_in({}) is None


def test_fold_in_matches_implicits_own_user_recalculation() -> None:
    from implicit.cpu.als import AlternatingLeastSquares
    from scipy import sparse

    histories = _histories()
    params = AlsParams(factors=8, regularization=0.2, alpha=3.0, iterations=5)
    model = fit_als(histories, ITEMS, params, version=1)
    als = AlternatingLeastSquares(factors=8, regularization=0.2, alpha=3.0)
    als.item_factors = model.factors
    history = histories["u5"]
    row = sparse.csr_matrix(
        ([history[i] for i in history], ([0] * len(history), [ITEMS.index(i) for i in history])),
        shape=(1, 40),
        dtype=np.float32,
    )
    theirs = als.recalculate_user(0, row)
    np.testing.assert_allclose(model.fold_in(history), theirs, rtol=1e-3, atol=1e-4)


def test_user_histories_sum_weights_decay_and_drop_non_positive() -> None:
    day = 24 * 3600 * 1000
    events = [
        InteractionEvent("a", "u", "x", "click", 0),
        InteractionEvent("b", "u", "x", "like", day),
        InteractionEvent("c", "u", "y", "view", day),
        InteractionEvent("d", "u", "y", "dislike", day),  # 0.5 - 2 < 0: dropped
        InteractionEvent("e", "v", "z", "skip", day),  # only negative: no history at all
    ]
    weights = {"click": 1.0, "like": 2.0, "view": 0.5, "dislike": -2.0, "skip": -0.5}
    assert user_histories(events, weights) == {"u": {"x": 3.0}}
    decayed = user_histories(events, weights, half_life_ms=day, now_ms=day)
    assert decayed == {"u": {"x": pytest.approx(0.5 + 2.0)}}


def test_retraining_on_unchanged_data_keeps_neighbourhoods() -> None:
    histories = _histories(2)
    params = AlsParams(factors=8, regularization=0.1, alpha=1.0, iterations=15)
    first, again = fit_als(histories, ITEMS, params, 1), fit_als(histories, ITEMS, params, 2)
    assert neighbour_drift(first, again, k=5) < 0.05
    other = fit_als(_histories(9), ITEMS, params, 3)  # other users, other neighbourhoods
    assert neighbour_drift(first, other, k=5) > 0.3


def test_folding_in_many_users_at_once_equals_one_by_one() -> None:
    rng = np.random.default_rng(6)
    model = CollabModel(1, ITEMS, rng.normal(size=(40, 5)).astype(np.float32), 0.2, 3.0)
    histories = [
        {ITEMS[i]: float(rng.choice([0.5, 2.0])) for i in rng.choice(40, size, replace=False)}
        for size in (1, 2, 3, 5, 9, 17, 3, 1)
    ] + [{}, {"unknown": 1.0}]
    together = model.fold_in_many(histories)
    for history, factor in zip(histories, together, strict=True):
        alone = model.fold_in(history)
        if alone is None:
            assert factor is None
        else:
            np.testing.assert_allclose(factor, alone, rtol=1e-4, atol=1e-5)


def test_the_worker_runs_numpys_blas_on_one_thread() -> None:
    with threadpool_limits(2, "blas"):  # restored afterwards: the limit is process-wide
        single_threaded_blas()
        blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
        assert blas and all(pool["num_threads"] == 1 for pool in blas)
