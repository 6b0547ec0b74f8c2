"""Training the collaborative space: users' histories from the interaction log, implicit-feedback
ALS item factors fitted by the `implicit` library (Hu, Koren and Volinsky), and how far a new
version's neighbourhoods moved from the last. The model and its real-time fold-in are
recstream.core.collab."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recstream.core.collab import CollabModel
from recstream.schemas.events import InteractionEvent


def neighbour_sets(model: CollabModel, items: Sequence[str], k: int = 20) -> dict[str, set[str]]:
    """Each item's k nearest items by cosine of the factors."""
    norms = np.linalg.norm(model.factors, axis=1, keepdims=True)
    unit = model.factors / np.maximum(norms, 1e-12)
    result = {}
    for item in items:
        row = model.row(item)
        if row is None:
            continue
        similarity = unit @ unit[row]
        similarity[row] = -np.inf
        top = np.argpartition(-similarity, min(k, len(similarity) - 1))[:k]
        result[item] = {model.items[i] for i in top}
    return result


def neighbour_drift(old: CollabModel, new: CollabModel, k: int = 20, sample: int = 2000) -> float:
    """Mean share of an item's top-k neighbours that changed between two versions, over (up to
    `sample`) items both know: 0 = the same neighbourhoods, 1 = all different."""
    common = sorted(set(old.items) & set(new.items))
    if len(common) <= k:
        return 0.0
    step = max(1, len(common) // sample)
    picked = common[::step]
    before, after = neighbour_sets(old, picked, k), neighbour_sets(new, picked, k)
    return float(np.mean([1.0 - len(before[i] & after[i]) / k for i in picked]))


def user_histories(
    events: Iterable[InteractionEvent],
    weights: Mapping[str, float],
    half_life_ms: int | None = None,
    now_ms: int | None = None,
) -> dict[str, dict[str, float]]:
    """r_u for every user: summed event weights per item (negative events subtract), decayed by
    age against now_ms when a half-life is given; items left at or below zero are dropped."""
    sums: dict[str, dict[str, float]] = {}
    for event in events:
        weight = weights.get(event.event_type, 0.0)
        if weight == 0:
            continue
        if half_life_ms is not None and now_ms is not None:
            weight *= 0.5 ** (max(0, now_ms - event.event_time) / half_life_ms)
        history = sums.setdefault(event.user_id, {})
        history[event.item_id] = history.get(event.item_id, 0.0) + weight
    return {
        user: kept
        for user, history in sums.items()
        if (kept := {item: r for item, r in history.items() if r > 0})
    }


@dataclass(frozen=True)
class AlsParams:
    """No defaults here: the settings' RECSTREAM_COLLAB_* are the one source
    (recstream.compose.als_params)."""

    factors: int
    regularization: float
    alpha: float
    iterations: int
    seed: int = 3


def fit_implicit(matrix: Any, params: AlsParams) -> Any:
    """`implicit`'s CPU ALS fitted on a users x items confidence matrix (scipy CSR)."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):  # implicit's advice: it runs its own threads
        model = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=params.alpha,
            iterations=params.iterations,
            random_state=params.seed,
            calculate_training_loss=False,
        )
        model.fit(matrix.astype(np.float32), show_progress=False)
    return model


def fit_als(
    histories: Mapping[str, Mapping[str, float]],
    items: Sequence[str],
    params: AlsParams,
    version: int,
) -> CollabModel:
    """Item factors by implicit ALS over the users' histories (columns: `items`, in order)."""
    from scipy import sparse

    column = {item: n for n, item in enumerate(items)}
    rows, cols, values = [], [], []
    for row, history in enumerate(histories.values()):
        for item, r in history.items():
            if item in column:
                rows.append(row)
                cols.append(column[item])
                values.append(r)
    matrix = sparse.csr_matrix(
        (values, (rows, cols)), shape=(len(histories), len(items)), dtype=np.float32
    )
    model = fit_implicit(matrix, params)
    return CollabModel(
        version, items, np.asarray(model.item_factors), params.regularization, params.alpha
    )
