"""The baselines recstream must beat, trained on the same split: most popular, item-kNN over
co-occurrence, implicit ALS (the `implicit` library), EASE and RP3beta. Each excludes the user's
training items, as the served recommender excludes seen items. Ties are broken by item id, so
lists are deterministic."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import sparse

from recstream.schemas.events import InteractionEvent
from recstream.streams.collab import AlsParams, fit_implicit

Scores = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Interactions:
    """Training events as a user x item confidence matrix (positive event weights summed)."""

    rows: dict[str, int]  # user -> matrix row
    items: list[str]  # every catalog item, sorted: column order
    matrix: sparse.csr_matrix  # positive weights
    seen: dict[str, set[str]]  # every training item per user, negative events too

    @classmethod
    def build(
        cls,
        events: Sequence[InteractionEvent],
        catalog: Iterable[str],
        weights: Mapping[str, float],
    ) -> Interactions:
        items = sorted(set(catalog))
        column = {item: n for n, item in enumerate(items)}
        users = sorted({e.user_id for e in events})
        row = {user: n for n, user in enumerate(users)}
        seen: dict[str, set[str]] = {}
        rows, cols, values = [], [], []
        for event in events:
            seen.setdefault(event.user_id, set()).add(event.item_id)
            weight = weights.get(event.event_type, 0.0)
            if weight > 0 and event.item_id in column:
                rows.append(row[event.user_id])
                cols.append(column[event.item_id])
                values.append(weight)
        matrix = sparse.csr_matrix(
            (values, (rows, cols)), shape=(len(users), len(items)), dtype=np.float64
        )
        matrix.sum_duplicates()
        return cls(row, items, matrix, seen)

    def top(self, scores: Scores, user: str, k: int) -> list[str]:
        """The k best-scored items the user has not interacted with; ties by item id."""
        excluded = self.seen.get(user, set())
        order = np.lexsort((np.arange(len(scores)), -scores))
        picked = []
        for column in order:
            item = self.items[column]
            if item not in excluded:
                picked.append(item)
                if len(picked) == k:
                    break
        return picked

    def row_of(self, user: str) -> int | None:
        """The user's matrix row, when the user has positive training events."""
        row = self.rows.get(user)
        if row is None or self.matrix.indptr[row] == self.matrix.indptr[row + 1]:
            return None
        return row


class MostPopular:
    """Items by number of training users with a positive event."""

    def __init__(self, data: Interactions) -> None:
        self._data = data
        self._scores: Scores = np.asarray((data.matrix > 0).sum(axis=0), dtype=np.float64).ravel()

    def recommend(self, user: str, k: int) -> list[str]:
        return self._data.top(self._scores, user, k)


class ItemKNN:
    """Item-based collaborative filtering: score(j) = sum over the user's positive items i of
    cosine(i, j) on the binary user x item matrix (co-occurrence / sqrt(n_i n_j)), all
    neighbours. Users without history get popularity (the usual fallback)."""

    def __init__(self, data: Interactions) -> None:
        self._data = data
        binary = (data.matrix > 0).astype(np.float64)
        counts = np.asarray(binary.sum(axis=0)).ravel()
        self._inverse_norm = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1)), 0.0)
        self._binary = binary.tocsr()
        self._popular = MostPopular(data)

    def recommend(self, user: str, k: int) -> list[str]:
        row = self._data.row_of(user)
        if row is None:
            return self._popular.recommend(user, k)
        history = (self._data.matrix[row] > 0).astype(np.float64).multiply(self._inverse_norm)
        # (h / sqrt(n)) X^T X / sqrt(n_j): the sum of cosines without the item x item matrix.
        co_users = self._binary @ sparse.csr_matrix(history).T
        scores = np.asarray((self._binary.T @ co_users).todense()).ravel() * self._inverse_norm
        return self._data.top(scores, user, k)


class ImplicitALS:
    """Hu, Koren and Volinsky's implicit-feedback ALS from `implicit`, confidence 1 + alpha * w."""

    def __init__(self, data: Interactions, params: AlsParams) -> None:
        self._data = data
        self._model = fit_implicit(data.matrix, params)
        self._popular = MostPopular(data)

    def recommend(self, user: str, k: int) -> list[str]:
        row = self._data.row_of(user)
        if row is None:
            return self._popular.recommend(user, k)
        scores = np.asarray(
            self._model.item_factors @ self._model.user_factors[row], dtype=np.float64
        )
        return self._data.top(scores, user, k)


class _ItemToItem:
    """A user's scores are their row of the binary matrix X times an item x item weight matrix
    (`weights`, dense or sparse); users without positive history get popularity."""

    weights: Scores | sparse.csr_matrix

    def __init__(self, data: Interactions) -> None:
        self._data = data
        self._binary = (data.matrix > 0).astype(np.float64).tocsr()
        self._popular = MostPopular(data)

    def recommend(self, user: str, k: int) -> list[str]:
        row = self._data.row_of(user)
        if row is None:
            return self._popular.recommend(user, k)
        scores = self._binary[row] @ self.weights
        dense = scores.toarray() if sparse.issparse(scores) else np.asarray(scores)
        return self._data.top(dense.ravel().astype(np.float64), user, k)


class Ease(_ItemToItem):
    """EASE (Steck, 2019): the item x item weights B that best rebuild the binary user x item
    matrix X from itself with a zero diagonal, in closed form: P = (X^T X + lam I)^-1,
    B_ij = -P_ij / P_jj, B_jj = 0. Dense in the catalog: n_items^2 doubles (9,742 MovieLens
    movies: 760 MB), one inversion per lambda."""

    def __init__(self, data: Interactions, regularization: float = 500.0) -> None:
        super().__init__(data)
        gram = np.asarray((self._binary.T @ self._binary).todense())
        gram[np.diag_indices_from(gram)] += regularization
        inverse = np.linalg.inv(gram)
        self.weights = -inverse / np.diag(inverse)
        self.weights[np.diag_indices_from(self.weights)] = 0.0


class RP3Beta(_ItemToItem):
    """RP3beta (Paudel et al., 2017; as Dacrema et al. 2019 run it): a random walk user -> item
    -> user -> item on the binary matrix X. With P_ui the user rows of X normalised to sum 1 and
    P_iu the item rows of X^T likewise, both raised elementwise to `alpha`, the item x item
    weights are W = P_iu P_ui with column j divided by item j's popularity to the power `beta`
    (beta > 0 demotes popular items), the diagonal zeroed and each row cut to its
    `neighbours` largest."""

    def __init__(
        self, data: Interactions, alpha: float = 1.0, beta: float = 0.3, neighbours: int = 100
    ) -> None:
        super().__init__(data)
        binary = self._binary
        user_to_item = _rows_sum_to_one(binary).power(alpha)
        item_to_user = _rows_sum_to_one(binary.T.tocsr()).power(alpha)
        popularity = np.asarray(binary.sum(axis=0)).ravel()
        demote = np.where(popularity > 0, np.maximum(popularity, 1.0) ** -beta, 0.0)
        walks = sparse.csr_matrix((item_to_user @ user_to_item).tocsr() @ sparse.diags(demote))
        walks.setdiag(0.0)
        walks.eliminate_zeros()
        self.weights = _top_per_row(walks, neighbours)


def _rows_sum_to_one(matrix: sparse.csr_matrix) -> sparse.csr_matrix:
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    inverse = np.where(sums > 0, 1.0 / np.maximum(sums, 1e-300), 0.0)
    return sparse.csr_matrix(sparse.diags(inverse) @ matrix)


def _top_per_row(matrix: sparse.csr_matrix, keep: int) -> sparse.csr_matrix:
    """Each row's `keep` largest entries (ties by column), the rest dropped."""
    rows, cols, values = [], [], []
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        columns, data = matrix.indices[start:end], matrix.data[start:end]
        best = np.lexsort((columns, -data))[:keep]
        rows += [row] * len(best)
        cols += columns[best].tolist()
        values += data[best].tolist()
    return sparse.csr_matrix((values, (rows, cols)), shape=matrix.shape)


def training_counts(events: Sequence[InteractionEvent]) -> Counter[str]:
    """Distinct users per item in training (for novelty)."""
    return Counter(item for _, item in {(e.user_id, e.item_id) for e in events})
