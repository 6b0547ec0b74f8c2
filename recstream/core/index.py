"""The vector index concern: item vectors and their payload, searched by similarity with filters.

The port and its value types. The backends live in `recstream.infra.stores` (embedded Qdrant,
a Qdrant server, in-memory); `recstream.infra.stores.registry` opens the one the settings name.
Every backend passes tests/contract/test_vector_index.py.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from recstream.core.attributes import AttributeCondition, AttributeType, admits, payload_key
from recstream.core.errors import RecstreamError

Vector = npt.NDArray[np.float32]
# cosine for content embeddings; dot for ALS factors, whose lengths carry meaning (popularity).
Distance = Literal["cosine", "dot"]
CONTENT_VECTOR = "content"
# The collaborative space (docs/collab.md): ALS item factors as two more named vectors beside the
# content one, double-buffered: a new model version is written into the slot no reader uses, then
# readers switch to it. Their dimension is fixed when the collection is created.
COLLAB_SLOTS = (0, 1)
# Reciprocal rank fusion of the content and the collaborative candidate lists (Qdrant's RRF k).
RRF_K = 60
# Payload fields with an index (filters run inside the index, before scoring).
KEYWORD_FIELDS = ("item_id", "category", "tags")
# Availability and deletion are stored as 0/1: qdrant-edge-py 0.9 does not match boolean
# payload values.
INTEGER_FIELDS = ("available", "updated_ms", "deleted")
IndexKind = Literal["keyword", "integer", "float"]
_ID_NAMESPACE = uuid.UUID("9d3c1a52-6c1e-4f55-a0a1-1f1a8bb2b7e4")


def payload_indexes(filter_attributes: Mapping[str, AttributeType]) -> list[tuple[str, IndexKind]]:
    """Every payload index a collection has: the fixed fields, and one per filterable attribute
    (numbers as floats: an integer value matches a float range too)."""
    fixed: list[tuple[str, IndexKind]] = [(n, "keyword") for n in KEYWORD_FIELDS]
    fixed += [(n, "integer") for n in INTEGER_FIELDS]
    return fixed + [
        (payload_key(name), "keyword" if kind == "keyword" else "float")
        for name, kind in sorted(filter_attributes.items())
    ]


@functools.lru_cache(maxsize=1 << 18)
def point_id(item_id: str) -> str:
    """Qdrant point ids are UUIDs or integers: derive a stable UUID from the item id.
    Cached: every search filter and retrieve maps ids, and uuid5 costs ~10 µs each."""
    return str(uuid.uuid5(_ID_NAMESPACE, item_id))


def collection_name(model_id: str, dimension: int) -> str:
    """One collection per embedding model version: the name carries model id and dimension."""
    safe = re.sub(r"[^A-Za-z0-9]+", "-", model_id).strip("-").lower()
    return f"items__{safe}__{dimension}"


def collab_vector(slot: int) -> str:
    """The named vector of one collaborative slot."""
    if slot not in COLLAB_SLOTS:
        raise ValueError(f"collab slot {slot} is not one of {COLLAB_SLOTS}")
    return f"collab_{slot}"


COLLAB_VECTORS = [collab_vector(slot) for slot in COLLAB_SLOTS]


def collab_vector_of(collection: str, collab_dimension: int, slot: int) -> str:
    """The slot's named vector in a collection, refused clearly when it was created without
    collaborative slots (every adapter's collab reads and writes go through this)."""
    if not collab_dimension:
        raise RecstreamError(f"collection {collection} has no collaborative slots")
    return collab_vector(slot)


def point_chunks(item_ids: Iterable[str], size: int = 1000) -> Iterator[dict[str, str]]:
    """Item ids in chunks of `size`, each as point id -> item id (to map records back)."""
    chunk: dict[str, str] = {}
    for item_id in item_ids:
        chunk[point_id(item_id)] = item_id
        if len(chunk) == size:
            yield chunk
            chunk = {}
    if chunk:
        yield chunk


@dataclass(frozen=True, slots=True)
class ItemPayload:
    item_id: str
    title: str
    category: str | None
    tags: tuple[str, ...]
    available: bool
    content_hash: str
    updated_ms: int
    attributes: Mapping[str, Any] = field(default_factory=dict)
    # A tombstone: the item was deleted at updated_ms. Kept (never served, never retrieved but
    # on purpose) so that an older upsert arriving later cannot bring the item back.
    deleted: bool = False

    def to_payload(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "title": self.title,
            "category": self.category,
            "tags": list(self.tags),
            "available": int(self.available),
            "content_hash": self.content_hash,
            "updated_ms": self.updated_ms,
            "attributes": dict(self.attributes),
            "deleted": int(self.deleted),
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> ItemPayload:
        return cls(
            item_id=payload["item_id"],
            title=payload.get("title", ""),
            category=payload.get("category"),
            tags=tuple(payload.get("tags") or ()),
            available=bool(payload.get("available", 1)),
            content_hash=payload["content_hash"],
            updated_ms=int(payload["updated_ms"]),
            attributes=payload.get("attributes") or {},
            deleted=bool(payload.get("deleted", 0)),
        )

    def tombstone(self, deleted_ms: int) -> ItemPayload:
        """This item's tombstone: deleted at deleted_ms, hidden."""
        return replace(self, available=False, deleted=True, updated_ms=deleted_ms)


@dataclass(frozen=True, slots=True)
class ItemRecord:
    payload: ItemPayload
    vector: Vector | None


@dataclass(frozen=True, slots=True)
class ScoredItem:
    payload: ItemPayload
    score: float
    vector: Vector | None = None


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Pre-filters applied inside the index."""

    available_only: bool = True
    categories_in: tuple[str, ...] = ()
    categories_out: tuple[str, ...] = ()
    exclude_item_ids: tuple[str, ...] = ()
    tags_any: tuple[str, ...] = ()  # the item has at least one of these tags
    attributes: tuple[AttributeCondition, ...] = ()  # on declared attributes only

    def admits(self, payload: ItemPayload) -> bool:
        """The payload conditions, for an item that did not come from a filtered search."""
        if self.available_only and not payload.available:
            return False
        if self.categories_in and payload.category not in self.categories_in:
            return False
        if self.categories_out and payload.category in self.categories_out:
            return False
        return admits(payload.attributes, payload.tags, self.tags_any, self.attributes)


class ItemStore(Protocol):
    """Item vectors and payloads by id: what an index replica keeps equal to the vector topic
    (recstream.streams.replica) and the interaction processor reads."""

    @property
    def collection(self) -> str:
        """The collection's name: it carries the model id and the dimension."""

    @property
    def dimension(self) -> int: ...

    def upsert(self, items: Sequence[tuple[ItemPayload, Vector]]) -> None:
        """Insert or replace items with their content vectors (collab vectors are kept)."""

    def delete(self, item_ids: Sequence[str]) -> None:
        """Remove items; unknown ids are ignored."""

    def purge_deleted(self, before_ms: int) -> None:
        """Remove the tombstones of items deleted before before_ms."""

    def retrieve(
        self, item_ids: Sequence[str], with_vectors: bool = True, include_deleted: bool = False
    ) -> dict[str, ItemRecord]:
        """The stored items among item_ids (missing ones are absent from the result); deleted
        items' tombstones only with include_deleted (the catalog processor's staleness test)."""

    def count(self) -> int:
        """Number of items stored (tombstones not counted)."""

    def flush(self) -> None:
        """Make every write so far durable (a replica checkpoints its offsets after this)."""

    def close(self) -> None:
        """Flush and release the store."""


class VectorIndex(ItemStore, Protocol):
    """Item vectors and payloads for one collection (one embedding model version), searched."""

    def set_available(self, item_ids: Sequence[str], available: bool, updated_ms: int) -> None:
        """Change availability without touching vectors."""

    def search(
        self, vector: Vector, limit: int, flt: SearchFilter, with_vectors: bool = False
    ) -> list[ScoredItem]:
        """Nearest items by cosine similarity that pass the filter, best first (never a
        tombstone)."""

    @property
    def collab_dimension(self) -> int:
        """The dimension of the collaborative slots (0: the collection has none)."""

    def write_collab(self, slot: int, factors: Mapping[str, Vector]) -> int:
        """Make `factors` the whole content of one collaborative slot: every item's vector in
        the slot is removed, then the given items that are stored get theirs. Returns how many
        were written. Content vectors and payloads are untouched."""

    def read_collab(self, slot: int, item_ids: Sequence[str]) -> dict[str, Vector]:
        """The slot's vectors of those items that have one."""

    def search_blend(
        self,
        content: Vector,
        collab: Vector,
        slot: int,
        limit: int,
        flt: SearchFilter,
        with_vectors: bool = False,
    ) -> list[ScoredItem]:
        """In one query: the `limit` nearest items by content vector and the `limit` best by
        dot product with `collab` in the slot, both filtered, fused by reciprocal rank (best
        first; the score is the fused one). Vectors returned are the content vectors."""


def placeholder_vector(dimension: int) -> Vector:
    """The vector of a tombstone whose item was never stored: a point needs a vector, and this
    one is never searched (tombstones are filtered out)."""
    vector = np.zeros(dimension, dtype=np.float32)
    vector[0] = 1.0
    return vector


def as_vector(values: Any) -> Vector:
    return np.asarray(values, dtype=np.float32)


def vector_from(raw: Any) -> Vector | None:
    """The content vector of a Qdrant record's vector field (named or plain), if any."""
    if raw is None:
        return None
    return as_vector(raw[CONTENT_VECTOR] if isinstance(raw, dict) else raw)
