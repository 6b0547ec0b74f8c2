"""The interaction processor's own copy of the item vectors, materialised from the vector topic
(recstream.streams.replica): float16 rows in one matrix, and per item only what the processor
reads (category, availability, deletion, update time). 384 dimensions cost 768 bytes a row;
docs/benchmarks.md has the measured memory per 100k and 1M items.

Not durable: a process re-reads the (compacted) topic at start.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from recstream.core.index import ItemPayload, ItemRecord, Vector, collection_name

_NO_ATTRIBUTES: MappingProxyType[str, object] = MappingProxyType({})
_FIRST_ROWS = 1024


class ItemVectorCopy:
    """ItemStore in memory; its dimension (and so its collection's name) is the first vector's."""

    def __init__(self, model_id: str, dimension: int = 0) -> None:
        self._model_id = model_id
        self._dimension = dimension
        self._rows: dict[str, int] = {}
        self._payloads: list[ItemPayload | None] = []
        self._free: list[int] = []
        self._matrix: npt.NDArray[np.float16] = np.zeros((0, dimension), dtype=np.float16)
        self._lock = threading.Lock()

    @property
    def collection(self) -> str:
        return collection_name(self._model_id, self._dimension)

    @property
    def dimension(self) -> int:
        return self._dimension

    def upsert(self, items: Sequence[tuple[ItemPayload, Vector]]) -> None:
        with self._lock:
            for payload, vector in items:
                self._put(_slim(payload), vector)

    def _put(self, payload: ItemPayload, vector: Vector) -> None:
        if not self._dimension:
            self._dimension = len(vector)
            self._matrix = np.zeros((0, self._dimension), dtype=np.float16)
        if len(vector) != self._dimension:
            raise ValueError(f"a {len(vector)}-dimensional vector in a {self._dimension} copy")
        row = self._rows.get(payload.item_id)
        if row is None:
            row = self._free.pop() if self._free else self._grow()
            self._rows[payload.item_id] = row
        self._matrix[row] = vector
        self._payloads[row] = payload

    def _grow(self) -> int:
        row = len(self._payloads)
        if row == len(self._matrix):
            wider = np.zeros((max(_FIRST_ROWS, 2 * row), self._dimension), dtype=np.float16)
            wider[:row] = self._matrix
            self._matrix = wider
        self._payloads.append(None)
        return row

    def delete(self, item_ids: Sequence[str]) -> None:
        with self._lock:
            for item_id in item_ids:
                row = self._rows.pop(item_id, None)
                if row is not None:
                    self._payloads[row] = None
                    self._free.append(row)

    def purge_deleted(self, before_ms: int) -> None:
        with self._lock:
            old = [
                item_id
                for item_id, row in self._rows.items()
                if (p := self._payloads[row]) is not None and p.deleted and p.updated_ms < before_ms
            ]
        self.delete(old)

    def retrieve(
        self, item_ids: Sequence[str], with_vectors: bool = True, include_deleted: bool = False
    ) -> dict[str, ItemRecord]:
        found = {}
        with self._lock:
            for item_id in item_ids:
                row = self._rows.get(item_id)
                payload = None if row is None else self._payloads[row]
                if payload is None or (payload.deleted and not include_deleted):
                    continue
                assert row is not None
                vector = self._matrix[row].astype(np.float32) if with_vectors else None
                found[item_id] = ItemRecord(payload, vector)
        return found

    def count(self) -> int:
        with self._lock:
            payloads = [self._payloads[row] for row in self._rows.values()]
        return sum(1 for p in payloads if p is not None and not p.deleted)

    def nbytes(self) -> int:
        """The vector matrix's size (what dominates this copy's memory)."""
        return int(self._matrix.nbytes)

    def flush(self) -> None:
        """Nothing to make durable: the copy is rebuilt from the topic."""

    def close(self) -> None:
        """Nothing to release but memory."""


def _slim(payload: ItemPayload) -> ItemPayload:
    """What the processor reads of an item (its title, tags and attributes are the query
    side's)."""
    return ItemPayload(
        payload.item_id,
        "",
        payload.category,
        (),
        payload.available,
        payload.content_hash,
        payload.updated_ms,
        _NO_ATTRIBUTES,
        payload.deleted,
    )
