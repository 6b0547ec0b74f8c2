"""Embedded Qdrant through qdrant-edge-py: one shard directory per collection, in-process."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from recstream.errors import RecstreamError
from recstream.stores.vector_cache import RecordReader
from recstream.stores.vector_index import (
    CONTENT_VECTOR,
    INTEGER_FIELDS,
    KEYWORD_FIELDS,
    Distance,
    ItemPayload,
    ItemRecord,
    ScoredItem,
    SearchFilter,
    Vector,
    point_id,
)


class QdrantEdgeIndex:
    """VectorIndex over an EdgeShard. A lock serialises calls: the shard is shared by the
    catalog agent, the interaction thread and the query worker of one process."""

    def __init__(
        self, shard: qe.EdgeShard, collection: str, dimension: int, cache_vectors: int = 0
    ) -> None:
        self._shard = shard
        self._collection = collection
        self._dimension = dimension
        self._lock = threading.Lock()
        self._read = RecordReader(cache_vectors)

    @classmethod
    def open(
        cls,
        path: Path,
        collection: str,
        dimension: int,
        distance: Distance = "cosine",
        cache_vectors: int = 0,
    ) -> QdrantEdgeIndex:
        """Open the shard at path, creating it (with payload indexes) on first use. With
        cache_vectors, that many decoded vectors are remembered (recstream.stores.vector_cache)."""
        metric = qe.Distance.Dot if distance == "dot" else qe.Distance.Cosine
        config = qe.EdgeConfig(
            vectors={CONTENT_VECTOR: qe.EdgeVectorParams(size=dimension, distance=metric)}
        )
        try:
            if (path / "edge_config.json").exists() or any(path.glob("segments*")):
                shard = qe.EdgeShard.load(str(path), config)
            else:
                path.mkdir(parents=True, exist_ok=True)
                shard = qe.EdgeShard.create(str(path), config)
                _create_payload_indexes(shard)
        except Exception as error:  # the binding raises plain exceptions (e.g. shard locked)
            raise RecstreamError(f"cannot open embedded Qdrant shard at {path}: {error}") from error
        return cls(shard, collection, dimension, cache_vectors)

    @property
    def collection(self) -> str:
        return self._collection

    @property
    def dimension(self) -> int:
        return self._dimension

    def upsert(self, items: Sequence[tuple[ItemPayload, Vector]]) -> None:
        points = [
            qe.Point(point_id(p.item_id), {CONTENT_VECTOR: v.tolist()}, p.to_payload())
            for p, v in items
        ]
        with self._lock:
            self._shard.update(qe.UpdateOperation.upsert_points(points))

    def set_available(self, item_ids: Sequence[str], available: bool, updated_ms: int) -> None:
        payload = {"available": int(available), "updated_ms": updated_ms}
        with self._lock:
            self._shard.update(
                qe.UpdateOperation.set_payload([point_id(i) for i in item_ids], payload)
            )

    def delete(self, item_ids: Sequence[str]) -> None:
        with self._lock:
            self._shard.update(qe.UpdateOperation.delete_points([point_id(i) for i in item_ids]))

    def retrieve(self, item_ids: Sequence[str], with_vectors: bool = True) -> dict[str, ItemRecord]:
        if not item_ids:
            return {}
        with self._lock:
            records = self._shard.retrieve([point_id(i) for i in item_ids], True, with_vectors)
        return self._read.records(records, with_vectors)

    def search(
        self, vector: Vector, limit: int, flt: SearchFilter, with_vectors: bool = False
    ) -> list[ScoredItem]:
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(vector.tolist(), using=CONTENT_VECTOR),
            filter=_edge_filter(flt),
            with_payload=True,
            with_vector=with_vectors,
        )
        with self._lock:
            hits = self._shard.query(request)
        return self._read.hits(hits, with_vectors)

    def optimize(self) -> None:
        """Build the HNSW index and merge segments now (blocking), instead of on the fly."""
        with self._lock:
            self._shard.optimize()

    def count(self) -> int:
        with self._lock:
            return int(self._shard.info().points_count)

    def close(self) -> None:
        with self._lock:
            self._shard.flush()
            self._shard.close()


def _create_payload_indexes(shard: qe.EdgeShard) -> None:
    for name in KEYWORD_FIELDS:
        shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword))
    for name in INTEGER_FIELDS:
        shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Integer))


def _edge_filter(flt: SearchFilter) -> qe.Filter | None:
    must: list[Any] = []
    must_not: list[Any] = []
    if flt.available_only:
        must.append(qe.FieldCondition("available", match=qe.MatchValue(1)))
    if flt.categories_in:
        must.append(qe.FieldCondition("category", match=qe.MatchAny(list(flt.categories_in))))
    if flt.categories_out:
        must_not.append(qe.FieldCondition("category", match=qe.MatchAny(list(flt.categories_out))))
    if flt.exclude_item_ids:
        must_not.append(qe.HasIdCondition({point_id(i) for i in flt.exclude_item_ids}))
    if not must and not must_not:
        return None
    return qe.Filter(must=must or None, must_not=must_not or None)
