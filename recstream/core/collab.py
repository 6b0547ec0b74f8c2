"""The collaborative space, pure: implicit-feedback ALS item factors (Hu, Koren and Volinsky, as
the `implicit` library fits them) and the real-time fold-in of one user against fixed item factors.

A user's history is r_u: item -> summed positive event weight. With confidence c_ui = alpha * r_ui
and preference 1 for those items (0 and confidence 1 for every other item), the user's factor is
the least-squares solution

    x_u = (Y^T Y + reg * I + sum_i (c_ui - 1) y_i y_i^T)^-1  sum_i c_ui y_i

which needs only Y^T Y (cached once per model version) and the rows of the user's own items, so
it costs O(n_u f^2 + f^3) per user, not a pass over the catalog.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from recstream.core.state import UserState

Matrix = npt.NDArray[np.float32]


class CollabModel:
    """One trained version: item factors and what fold-in needs (Y^T Y computed once)."""

    def __init__(
        self,
        version: int,
        items: Sequence[str],
        factors: Matrix,
        regularization: float,
        alpha: float,
    ) -> None:
        if factors.ndim != 2 or factors.shape[0] != len(items):
            raise ValueError(f"{len(items)} items but factors of shape {factors.shape}")
        self.version = version
        self.items = tuple(items)
        self.factors = factors.astype(np.float32)
        self.regularization = regularization
        self.alpha = alpha
        self.slot: int | None = None  # where the vector index holds these factors, if anywhere
        self._rows = {item: n for n, item in enumerate(self.items)}
        wide = self.factors.astype(np.float64)
        self.gram: npt.NDArray[np.float64] = wide.T @ wide
        self._base = self.gram + regularization * np.eye(self.dimension)
        self._base_inverse: npt.NDArray[np.float64] = np.linalg.inv(self._base).astype(np.float64)

    @property
    def dimension(self) -> int:
        return int(self.factors.shape[1])

    def row(self, item_id: str) -> int | None:
        return self._rows.get(item_id)

    def fold_in(self, history: Mapping[str, float]) -> Matrix | None:
        """The user's factor for this history (items unknown to the model are ignored); None when
        no positive item is known to the model."""
        known = [
            (row, r) for item, r in history.items() if r > 0 and (row := self.row(item)) is not None
        ]
        if not known:
            return None
        rows = np.array([row for row, _ in known])
        confidence = self.alpha * np.array([r for _, r in known], dtype=np.float64)
        y = self.factors[rows].astype(np.float64)
        a = self.gram + self.regularization * np.eye(self.dimension)
        a += (y * (confidence - 1.0)[:, None]).T @ y
        b = (y * confidence[:, None]).sum(axis=0)
        solved: Matrix = np.linalg.solve(a, b).astype(np.float32)
        return solved

    def fold_in_many(self, histories: Sequence[Mapping[str, float]]) -> list[Matrix | None]:
        """`fold_in` for many users at once: users grouped by history length (padded to a power
        of two) and each group solved as one stacked system, so a batch of mostly short
        histories costs a few numpy calls instead of one Python round per user."""
        known = [
            [(row, r) for item, r in h.items() if r > 0 and (row := self.row(item)) is not None]
            for h in histories
        ]
        results: list[Matrix | None] = [None] * len(histories)
        groups: dict[int, list[int]] = {}
        for user, pairs in enumerate(known):
            if pairs:
                groups.setdefault(1 << (len(pairs) - 1).bit_length(), []).append(user)
        for width, users in groups.items():
            rows = np.zeros((len(users), width), dtype=np.int64)
            confidence = np.zeros((len(users), width))  # padding: confidence 0, row 0
            for n, user in enumerate(users):
                pairs = known[user]
                rows[n, : len(pairs)] = [row for row, _ in pairs]
                confidence[n, : len(pairs)] = [self.alpha * r for _, r in pairs]
            y = self.factors[rows].astype(np.float64)  # users x width x f
            weight = (confidence - 1.0) * (confidence > 0)  # the low-rank term's diagonal D
            b = (y * confidence[:, :, None]).sum(axis=1)
            solve = self._solve_short if width <= self.dimension // 2 else self._solve_long
            solved = solve(y, weight, b).astype(np.float32)
            for n, user in enumerate(users):
                results[user] = solved[n]
        return results

    def _solve_long(
        self,
        y: npt.NDArray[np.float64],
        weight: npt.NDArray[np.float64],
        b: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.float64]:
        """(B + Y^T D Y) x = b as stacked f x f systems, B = Y^T Y + reg I."""
        a = self._base + np.matmul((y * weight[:, :, None]).transpose(0, 2, 1), y)
        solved: npt.NDArray[np.float64] = np.linalg.solve(a, b[:, :, None])[:, :, 0]
        return solved

    def _solve_short(
        self,
        y: npt.NDArray[np.float64],
        weight: npt.NDArray[np.float64],
        b: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.float64]:
        """The same for short histories by the push-through identity
        (B + Y^T D Y)^-1 = P - P Y^T (I + D Y P Y^T)^-1 D Y P with P = B^-1 (once per version):
        width x width systems instead of f x f ones."""
        p = self._base_inverse
        z = b @ p  # P b (P is symmetric)
        yp = y @ p  # users x width x f
        m = np.eye(y.shape[1]) + weight[:, :, None] * np.matmul(yp, y.transpose(0, 2, 1))
        rhs = weight * np.einsum("unf,uf->un", y, z)
        t = np.linalg.solve(m, rhs[:, :, None])[:, :, 0]
        solved: npt.NDArray[np.float64] = z - np.einsum("un,unf->uf", t, yp)
        return solved

    def scores(self, user_factor: Matrix) -> npt.NDArray[np.float32]:
        """Predicted preference of every item (row order of `items`)."""
        result: npt.NDArray[np.float32] = self.factors @ user_factor
        return result


class ModelView:
    """One user's preferences under one model version (see consumers.recommender.CollabView)."""

    def __init__(self, model: CollabModel, user_factor: Matrix) -> None:
        self._model = model
        self.factor = user_factor
        self.slot = model.slot

    def score(self, item_ids: Sequence[str]) -> dict[str, float]:
        rows = {item: row for item in item_ids if (row := self._model.row(item)) is not None}
        if not rows:
            return {}
        scores = self._model.factors[list(rows.values())] @ self.factor
        return {item: float(score) for item, score in zip(rows, scores, strict=True)}


@dataclass(frozen=True)
class VersionInfo:
    version: int
    dimension: int
    regularization: float
    alpha: float
    items: int
    trained_ms: int
    drift: float | None  # mean share of top-20 neighbours changed against the previous version
    slot: int | None = None  # the index slot holding its factors, once installed
    installed_ms: int | None = None


class ModelSource(Protocol):
    def current(self) -> CollabModel | None: ...


class FixedModel:
    """One model that never changes (the offline evaluation's source)."""

    def __init__(self, model: CollabModel) -> None:
        self._model = model

    def current(self) -> CollabModel:
        return self._model


class StateCollab:
    """The query side's CollabSource: the factor the processor folded in, when it belongs to the
    active version, else a fold-in now from the user's stored history (same maths)."""

    def __init__(self, reader: ModelSource, min_history: int) -> None:
        self._reader = reader
        self._min_history = min_history

    def for_user(self, user_id: str, state: UserState) -> ModelView | None:
        model = self._reader.current()
        if model is None or len(state.collab_items) < max(1, self._min_history):
            return None
        factor = state.collab_vector
        if factor is None or state.collab_version != model.version:
            factor = model.fold_in(state.collab_items)
        return None if factor is None else ModelView(model, factor)
