"""An in-process VectorIndex over a numpy matrix: exact cosine search, nothing persisted.

For offline evaluation (`recstream eval` replays a dataset without any service) and as the exact
brute-force reference; it passes the same contract tests as the two Qdrant adapters. Not for
serving: every search scans every item.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from recstream.core.index import (
    COLLAB_SLOTS,
    RRF_K,
    Distance,
    ItemPayload,
    ItemRecord,
    ScoredItem,
    SearchFilter,
    Vector,
    collab_vector_of,
)

_GROW = 1024  # rows added at a time when the matrix is full


class InMemoryVectorIndex:
    def __init__(
        self,
        collection: str,
        dimension: int,
        distance: Distance = "cosine",
        collab_dimension: int = 0,
    ) -> None:
        self._collection = collection
        self._dimension = dimension
        self._collab_dimension = collab_dimension
        self._normalise = distance == "cosine"
        self._matrix = np.zeros((0, dimension), dtype=np.float32)
        # Collaborative slots, row-aligned with the matrix, and which rows hold a vector there.
        self._collab = np.zeros((len(COLLAB_SLOTS), 0, collab_dimension), dtype=np.float32)
        self._has_collab = np.zeros((len(COLLAB_SLOTS), 0), dtype=bool)
        self._payloads: list[ItemPayload | None] = []  # None: a deleted row, reused later
        # Per row, for filtering without a Python loop over the catalog:
        self._eligible = np.zeros(0, dtype=bool)  # live and available
        self._live = np.zeros(0, dtype=bool)
        self._categories = np.zeros(0, dtype=object)
        self._rows: dict[str, int] = {}
        self._free: list[int] = []

    @property
    def collection(self) -> str:
        return self._collection

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def collab_dimension(self) -> int:
        return self._collab_dimension

    def upsert(self, items: Sequence[tuple[ItemPayload, Vector]]) -> None:
        for payload, vector in items:
            row = self._rows.get(payload.item_id)
            if row is None:
                row = self._new_row()
                self._rows[payload.item_id] = row
            self._matrix[row] = _unit(vector) if self._normalise else vector
            self._store_payload(row, payload)

    def _store_payload(self, row: int, payload: ItemPayload | None) -> None:
        self._payloads[row] = payload
        self._live[row] = payload is not None and not payload.deleted
        self._eligible[row] = self._live[row] and payload is not None and payload.available
        self._categories[row] = None if payload is None else payload.category

    def _new_row(self) -> int:
        if self._free:
            return self._free.pop()
        row = len(self._payloads)
        if row == len(self._matrix):
            grown = np.zeros((row + _GROW, self._dimension), dtype=np.float32)
            grown[:row] = self._matrix
            self._matrix = grown
            pad = np.zeros(_GROW, dtype=bool)
            self._live = np.concatenate([self._live, pad])
            self._eligible = np.concatenate([self._eligible, pad])
            self._categories = np.concatenate([self._categories, np.zeros(_GROW, dtype=object)])
            collab = np.zeros((len(COLLAB_SLOTS), row + _GROW, self._collab_dimension), np.float32)
            collab[:, :row] = self._collab
            self._collab = collab
            self._has_collab = np.concatenate(
                [self._has_collab, np.zeros((len(COLLAB_SLOTS), _GROW), dtype=bool)], axis=1
            )
        self._payloads.append(None)
        return row

    def set_available(self, item_ids: Sequence[str], available: bool, updated_ms: int) -> None:
        for item_id in item_ids:
            row = self._rows.get(item_id)
            payload = None if row is None else self._payloads[row]
            if row is not None and payload is not None:
                self._store_payload(row, _with_availability(payload, available, updated_ms))

    def delete(self, item_ids: Sequence[str]) -> None:
        for item_id in item_ids:
            row = self._rows.pop(item_id, None)
            if row is not None:
                self._store_payload(row, None)
                self._has_collab[:, row] = False
                self._free.append(row)

    def purge_deleted(self, before_ms: int) -> None:
        self.delete(
            [
                item_id
                for item_id, row in self._rows.items()
                if (payload := self._payloads[row]) is not None
                and payload.deleted
                and payload.updated_ms < before_ms
            ]
        )

    def retrieve(
        self, item_ids: Sequence[str], with_vectors: bool = True, include_deleted: bool = False
    ) -> dict[str, ItemRecord]:
        found = {}
        for item_id in item_ids:
            row = self._rows.get(item_id)
            payload = None if row is None else self._payloads[row]
            if row is not None and payload is not None and (include_deleted or not payload.deleted):
                vector = self._matrix[row].copy() if with_vectors else None
                found[item_id] = ItemRecord(payload, vector)
        return found

    def search(
        self, vector: Vector, limit: int, flt: SearchFilter, with_vectors: bool = False
    ) -> list[ScoredItem]:
        allowed = self._allowed_rows(flt)
        top, scores = self._nearest(vector, allowed, limit)
        return [self._hit(row, float(scores[row]), with_vectors) for row in top]

    def _nearest(
        self, vector: Vector, allowed: npt.NDArray[np.bool_], limit: int
    ) -> tuple[list[int], npt.NDArray[np.float32]]:
        """The best `limit` allowed rows by content vector, best first, and all rows' scores."""
        query = _unit(vector) if self._normalise else vector.astype(np.float32)
        scores = np.where(allowed, self._matrix[: len(self._payloads)] @ query, -np.inf)
        return _top_rows(scores, allowed, limit), scores

    def _hit(self, row: int, score: float, with_vectors: bool) -> ScoredItem:
        payload = self._payloads[row]
        assert payload is not None  # deleted rows are never allowed
        return ScoredItem(payload, score, self._matrix[row].copy() if with_vectors else None)

    def resize_collab(self, dimension: int) -> None:
        """Empty collaborative slots of a new dimension (the evaluation tries several factor
        counts over one embedded catalog; a Qdrant collection fixes it at creation)."""
        rows = len(self._matrix)
        self._collab_dimension = dimension
        self._collab = np.zeros((len(COLLAB_SLOTS), rows, dimension), dtype=np.float32)
        self._has_collab = np.zeros((len(COLLAB_SLOTS), rows), dtype=bool)

    def write_collab(self, slot: int, factors: Mapping[str, Vector]) -> int:
        self._check_collab(slot)
        self._has_collab[slot] = False
        written = 0
        for item_id, vector in factors.items():
            row = self._rows.get(item_id)
            if row is not None:
                self._collab[slot, row] = vector
                self._has_collab[slot, row] = True
                written += 1
        return written

    def read_collab(self, slot: int, item_ids: Sequence[str]) -> dict[str, Vector]:
        self._check_collab(slot)
        rows = {i: row for i in item_ids if (row := self._rows.get(i)) is not None}
        return {
            i: self._collab[slot, row].copy()
            for i, row in rows.items()
            if self._has_collab[slot, row]
        }

    def search_blend(
        self,
        content: Vector,
        collab: Vector,
        slot: int,
        limit: int,
        flt: SearchFilter,
        with_vectors: bool = False,
    ) -> list[ScoredItem]:
        self._check_collab(slot)
        allowed = self._allowed_rows(flt)
        by_content, _ = self._nearest(content, allowed, limit)
        rows = len(self._payloads)
        liked = allowed & self._has_collab[slot, :rows]
        by_collab = _top_rows(
            np.where(liked, self._collab[slot, :rows] @ collab, -np.inf), liked, limit
        )
        fused: dict[int, float] = {}
        for ranking in (by_content, by_collab):
            for rank, row in enumerate(ranking, start=1):
                fused[row] = fused.get(row, 0.0) + 1.0 / (RRF_K + rank)
        order = sorted(fused, key=lambda row: (-fused[row], row))
        return [self._hit(row, fused[row], with_vectors) for row in order]

    def _check_collab(self, slot: int) -> None:
        collab_vector_of(self._collection, self._collab_dimension, slot)  # refuses a bad one

    def _allowed_rows(self, flt: SearchFilter) -> npt.NDArray[np.bool_]:
        rows = len(self._payloads)
        allowed = (self._eligible if flt.available_only else self._live)[:rows].copy()
        categories = self._categories[:rows]
        if flt.categories_in:
            allowed &= np.isin(categories, list(flt.categories_in))
        if flt.categories_out:
            allowed &= ~np.isin(categories, list(flt.categories_out))
        excluded = [row for i in flt.exclude_item_ids if (row := self._rows.get(i)) is not None]
        allowed[excluded] = False
        if flt.tags_any or flt.attributes:  # a scan of the payloads: this index is exact, not fast
            for index in np.flatnonzero(allowed):
                payload = self._payloads[int(index)]
                allowed[index] = payload is not None and flt.admits(payload)
        return allowed

    def count(self) -> int:
        return int(self._live[: len(self._payloads)].sum())

    def item_ids(self) -> list[str]:
        """Every stored item (not tombstones), sorted."""
        return sorted(i for i, row in self._rows.items() if self._live[row])

    def flush(self) -> None:
        """Nothing to flush: the index lives only in this process."""

    def close(self) -> None:
        """Nothing to flush: the index lives only in this process."""


def _top_rows(
    scores: npt.NDArray[np.float32], allowed: npt.NDArray[np.bool_], limit: int
) -> list[int]:
    """The best `limit` allowed rows, best first; equal scores in row order (deterministic)."""
    count = min(limit, int(allowed.sum()))
    if count <= 0:
        return []
    top = np.argpartition(-scores, count - 1)[:count]
    return [int(row) for row in top[np.lexsort((top, -scores[top]))]]


def _unit(vector: Vector) -> Vector:
    """Cosine distance, as in Qdrant: vectors are stored normalised. One already of unit length
    (as Qdrant returns them) is kept bit for bit, so vectors read from Qdrant round-trip exactly."""
    norm = float(np.linalg.norm(vector))
    if norm == 0 or abs(norm - 1.0) < 1e-6:
        return vector.astype(np.float32)
    return (vector / norm).astype(np.float32)


def _with_availability(payload: ItemPayload, available: bool, updated_ms: int) -> ItemPayload:
    return replace(payload, available=available, updated_ms=updated_ms)
