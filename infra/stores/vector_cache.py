"""Decoded item vectors, remembered by the Qdrant adapters.

Turning a stored vector into a numpy array is the expensive part of reading one from the embedded
index (the 384 floats cross from Rust into Python objects, about 20 µs per item here), and a
recommendation reads 50-150 of them. The Qdrant binding converts a record's vector only when it
is asked for, so an adapter reads records with vectors in one call and asks for the vector only
when this memo does not hold it. The key is (item id, content hash, updated time): any rewrite of
an item changes its key, so a remembered vector never outlives the item it was read for and
nothing has to be invalidated.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from recstream.core.index import ItemPayload, ItemRecord, ScoredItem, Vector, as_vector, vector_from

_Key = tuple[str, str, int]


class VectorMemo:
    """A bounded LRU of decoded vectors, safe to share between threads."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._vectors: OrderedDict[_Key, Vector] = OrderedDict()
        self._lock = threading.Lock()

    def vector(self, payload: ItemPayload, raw: Callable[[], Any]) -> Vector | None:
        """The item's vector: remembered, else decoded from `raw()` and remembered."""
        key = (payload.item_id, payload.content_hash, payload.updated_ms)
        with self._lock:
            found = self._vectors.get(key)
            if found is not None:
                self._vectors.move_to_end(key)
                return found
        decoded = vector_from(raw())
        if decoded is not None and self._capacity > 0:
            decoded.setflags(write=False)  # shared between callers: nobody may change it
            with self._lock:
                self._vectors[key] = decoded
                while len(self._vectors) > self._capacity:
                    self._vectors.popitem(last=False)
        return decoded


class RecordReader:
    """Turns the records a Qdrant API returns (anything with `payload`, `vector` and, for hits,
    `score`) into ItemRecords and ScoredItems, through a memo when one is wanted."""

    def __init__(self, cache_vectors: int = 0) -> None:
        self._memo = VectorMemo(cache_vectors) if cache_vectors else None

    def records(
        self, rows: Iterable[Any], with_vectors: bool, include_deleted: bool = False
    ) -> dict[str, ItemRecord]:
        found = {}
        for row in rows:
            if row.payload and (include_deleted or not row.payload.get("deleted")):
                payload = ItemPayload.from_payload(row.payload)
                found[payload.item_id] = ItemRecord(
                    payload, self._vector(payload, row, with_vectors)
                )
        return found

    def hits(self, rows: Iterable[Any], with_vectors: bool) -> list[ScoredItem]:
        scored = []
        for row in rows:
            if row.payload:
                payload = ItemPayload.from_payload(row.payload)
                vector = self._vector(payload, row, with_vectors)
                scored.append(ScoredItem(payload, float(row.score), vector))
        return scored

    def named(self, rows: Iterable[Any], name: str) -> dict[str, Vector]:
        """One named vector (a collab slot) of each record that has it; not remembered."""
        return {
            row.payload["item_id"]: as_vector(row.vector[name])
            for row in rows
            if row.payload and row.vector and name in row.vector
        }

    def _vector(self, payload: ItemPayload, row: Any, with_vectors: bool) -> Vector | None:
        if not with_vectors:
            return None
        if self._memo is None:
            return vector_from(row.vector)
        return self._memo.vector(payload, lambda: row.vector)
