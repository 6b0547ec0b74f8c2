"""An in-process VectorIndex over a numpy matrix: exact cosine search, nothing persisted.

For offline evaluation (`recstream eval` replays a dataset without any service) and as the exact
brute-force reference; it passes the same contract tests as the two Qdrant adapters. Not for
serving: every search scans every item.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from recstream.stores.vector_index import (
    Distance,
    ItemPayload,
    ItemRecord,
    ScoredItem,
    SearchFilter,
    Vector,
)

_GROW = 1024  # rows added at a time when the matrix is full


class InMemoryVectorIndex:
    def __init__(self, collection: str, dimension: int, distance: Distance = "cosine") -> None:
        self._collection = collection
        self._dimension = dimension
        self._normalise = distance == "cosine"
        self._matrix = np.zeros((0, dimension), dtype=np.float32)
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
        self._live[row] = payload is not None
        self._eligible[row] = payload is not None and payload.available
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
                self._free.append(row)

    def retrieve(self, item_ids: Sequence[str], with_vectors: bool = True) -> dict[str, ItemRecord]:
        found = {}
        for item_id in item_ids:
            row = self._rows.get(item_id)
            payload = None if row is None else self._payloads[row]
            if row is not None and payload is not None:
                vector = self._matrix[row].copy() if with_vectors else None
                found[item_id] = ItemRecord(payload, vector)
        return found

    def search(
        self, vector: Vector, limit: int, flt: SearchFilter, with_vectors: bool = False
    ) -> list[ScoredItem]:
        allowed = self._allowed_rows(flt)
        if limit <= 0 or not allowed.any():
            return []
        query = _unit(vector) if self._normalise else vector.astype(np.float32)
        scores = np.where(allowed, self._matrix[: len(self._payloads)] @ query, -np.inf)
        count = min(limit, int(allowed.sum()))
        top = np.argpartition(-scores, count - 1)[:count]
        # Best first; equal scores in row order, so results are deterministic.
        top = top[np.lexsort((top, -scores[top]))]
        hits = []
        for row in top:
            payload = self._payloads[row]
            assert payload is not None  # deleted rows are never allowed
            found = self._matrix[row].copy() if with_vectors else None
            hits.append(ScoredItem(payload, float(scores[row]), found))
        return hits

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
        return allowed

    def count(self) -> int:
        return len(self._rows)

    def item_ids(self) -> list[str]:
        """Every stored item, sorted."""
        return sorted(self._rows)

    def close(self) -> None:
        """Nothing to flush: the index lives only in this process."""


def _unit(vector: Vector) -> Vector:
    """Cosine distance, as in Qdrant: vectors are stored normalised. One already of unit length
    (as Qdrant returns them) is kept bit for bit, so vectors read from Qdrant round-trip exactly."""
    norm = float(np.linalg.norm(vector))
    if norm == 0 or abs(norm - 1.0) < 1e-6:
        return vector.astype(np.float32)
    return (vector / norm).astype(np.float32)


def _with_availability(payload: ItemPayload, available: bool, updated_ms: int) -> ItemPayload:
    return ItemPayload(
        payload.item_id,
        payload.title,
        payload.category,
        payload.tags,
        available,
        payload.content_hash,
        updated_ms,
        payload.attributes,
    )
