"""A read-side vector cache in front of any vector index.

Turning a stored vector into a numpy array costs the embedded index about 30 µs per item in
Python (384 floats cross from Rust one by one), and a recommendation reads 50-150 of them. The
query side therefore asks the index for payloads only and takes vectors from a bounded cache keyed
by (item id, content hash, updated time): any rewrite of an item changes its key, so a cached
vector never outlives the item it was read for and nothing has to be invalidated.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from recstream.stores.vector_index import (
    ItemPayload,
    ItemRecord,
    ScoredItem,
    SearchFilter,
    Vector,
    VectorIndex,
)

_Key = tuple[str, str, int]


def _key(payload: ItemPayload) -> _Key:
    return payload.item_id, payload.content_hash, payload.updated_ms


class VectorCachingIndex:
    """Reads through `inner`, vectors from a bounded LRU; writes go straight to `inner`.
    Safe to share between query threads."""

    def __init__(self, inner: VectorIndex, capacity: int = 50_000) -> None:
        self._inner = inner
        self._capacity = capacity
        self._vectors: OrderedDict[_Key, Vector] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def collection(self) -> str:
        return self._inner.collection

    @property
    def dimension(self) -> int:
        return self._inner.dimension

    def upsert(self, items: Sequence[tuple[ItemPayload, Vector]]) -> None:
        self._inner.upsert(items)

    def set_available(self, item_ids: Sequence[str], available: bool, updated_ms: int) -> None:
        self._inner.set_available(item_ids, available, updated_ms)

    def delete(self, item_ids: Sequence[str]) -> None:
        self._inner.delete(item_ids)

    def count(self) -> int:
        return self._inner.count()

    def close(self) -> None:
        self._inner.close()

    def retrieve(self, item_ids: Sequence[str], with_vectors: bool = True) -> dict[str, ItemRecord]:
        records = self._inner.retrieve(item_ids, with_vectors=False)
        if not with_vectors:
            return records
        vectors = self._vectors_for([r.payload for r in records.values()])
        return {i: ItemRecord(r.payload, vectors.get(i)) for i, r in records.items()}

    def search(
        self, vector: Vector, limit: int, flt: SearchFilter, with_vectors: bool = False
    ) -> list[ScoredItem]:
        hits = self._inner.search(vector, limit, flt, with_vectors=False)
        if not with_vectors:
            return hits
        vectors = self._vectors_for([h.payload for h in hits])
        return [ScoredItem(h.payload, h.score, vectors.get(h.payload.item_id)) for h in hits]

    def _vectors_for(self, payloads: list[ItemPayload]) -> dict[str, Vector]:
        found: dict[str, Vector] = {}
        missing: list[str] = []
        with self._lock:
            for payload in payloads:
                key = _key(payload)
                vector = self._vectors.get(key)
                if vector is None:
                    missing.append(payload.item_id)
                else:
                    self._vectors.move_to_end(key)
                    found[payload.item_id] = vector
            self.hits += len(found)
            self.misses += len(missing)
        if missing:
            fetched = self._inner.retrieve(missing, with_vectors=True)
            self._remember(fetched.values())
            # Rewritten between the two reads: the newer vector is the right one to score with.
            found.update({i: r.vector for i, r in fetched.items() if r.vector is not None})
        return found

    def _remember(self, records: Iterable[ItemRecord]) -> None:
        with self._lock:
            for record in records:
                if record.vector is not None:
                    key = _key(record.payload)
                    self._vectors[key] = record.vector
                    self._vectors.move_to_end(key)
            while len(self._vectors) > self._capacity:
                self._vectors.popitem(last=False)
