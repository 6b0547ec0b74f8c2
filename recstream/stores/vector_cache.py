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
from collections.abc import Callable
from typing import Any

from recstream.stores.vector_index import ItemPayload, Vector, vector_from

_Key = tuple[str, str, int]


class VectorMemo:
    """A bounded LRU of decoded vectors, safe to share between threads."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._vectors: OrderedDict[_Key, Vector] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def vector(self, payload: ItemPayload, raw: Callable[[], Any]) -> Vector | None:
        """The item's vector: remembered, else decoded from `raw()` and remembered."""
        key = (payload.item_id, payload.content_hash, payload.updated_ms)
        with self._lock:
            found = self._vectors.get(key)
            if found is not None:
                self._vectors.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
        decoded = vector_from(raw())
        if decoded is not None and self._capacity > 0:
            decoded.setflags(write=False)  # shared between callers: nobody may change it
            with self._lock:
                self._vectors[key] = decoded
                while len(self._vectors) > self._capacity:
                    self._vectors.popitem(last=False)
        return decoded


def no_memo(_: ItemPayload, raw: Callable[[], Any]) -> Vector | None:
    """Decode every time (indexes opened without a memo)."""
    return vector_from(raw())
