"""Embedded Qdrant through qdrant-edge-py: one shard directory per collection, in-process."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import qdrant_edge as qe

from recstream.core.attributes import AttributeCondition, AttributeType, payload_key
from recstream.core.errors import RecstreamError
from recstream.core.index import (
    COLLAB_SLOTS,
    COLLAB_VECTORS,
    CONTENT_VECTOR,
    RRF_K,
    Distance,
    ItemPayload,
    ItemRecord,
    ScoredItem,
    SearchFilter,
    Vector,
    collab_vector,
    collab_vector_of,
    payload_indexes,
    point_chunks,
    point_id,
)
from recstream.infra.stores.vector_cache import RecordReader

_CONTENT_ONLY = [CONTENT_VECTOR]  # what reads ask for: collab vectors are read on purpose only


class QdrantEdgeIndex:
    """VectorIndex over an EdgeShard. A lock serialises calls: the shard is shared by the
    catalog agent, the interaction thread and the query worker of one process."""

    def __init__(
        self,
        shard: qe.EdgeShard,
        collection: str,
        dimension: int,
        cache_vectors: int = 0,
        collab_dimension: int = 0,
    ) -> None:
        self._shard = shard
        self._collection = collection
        self._dimension = dimension
        self._collab_dimension = collab_dimension
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
        collab_dimension: int = 0,
        filter_attributes: Mapping[str, AttributeType] | None = None,
    ) -> QdrantEdgeIndex:
        """Open the shard at path, creating it (when collab_dimension is set, with the
        collaborative slots) on first use; an existing shard keeps its own vectors. Payload
        indexes (the fixed fields and every filterable attribute) are created where missing.
        With cache_vectors, that many decoded vectors are remembered (vector_cache)."""
        try:
            if (path / "edge_config.json").exists():
                shard = qe.EdgeShard.load(str(path), None)  # the config it was created with
                collab_dimension = _stored_collab_dimension(path)
            elif any(path.glob("segments*")):  # written by a binding that kept no config file
                config = _edge_config(dimension, distance, collab_dimension)
                shard = qe.EdgeShard.load(str(path), config)
            else:
                path.mkdir(parents=True, exist_ok=True)
                shard = qe.EdgeShard.create(
                    str(path), _edge_config(dimension, distance, collab_dimension)
                )
            _create_payload_indexes(shard, filter_attributes or {})
        except Exception as error:  # the binding raises plain exceptions (e.g. shard locked)
            raise RecstreamError(f"cannot open embedded Qdrant shard at {path}: {error}") from error
        return cls(shard, collection, dimension, cache_vectors, collab_dimension)

    @property
    def collection(self) -> str:
        return self._collection

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def collab_dimension(self) -> int:
        return self._collab_dimension

    def payload_index_types(self) -> dict[str, str]:
        """The shard's payload indexes: field -> type ("keyword", "integer", "float")."""
        with self._lock:
            schema = self._shard.info().payload_schema
        return {name: str(i.data_type).rsplit(".", 1)[-1].lower() for name, i in schema.items()}

    def upsert(self, items: Sequence[tuple[ItemPayload, Vector]]) -> None:
        ids: list[qe.PointId] = [point_id(p.item_id) for p, _ in items]
        with self._lock:  # read and rewrite as one step: a collab write cannot slip between
            kept = self._collab_vectors_of(ids)
            points = [
                qe.Point(pid, {CONTENT_VECTOR: v.tolist()} | kept.get(str(pid), {}), p.to_payload())
                for pid, (p, v) in zip(ids, items, strict=True)
            ]
            self._shard.update(qe.UpdateOperation.upsert_points(points))

    def _collab_vectors_of(self, ids: list[qe.PointId]) -> dict[str, Any]:
        """The collab vectors stored for these points: an upsert replaces a whole point, so the
        catalog's rewrite of an item must carry them over."""
        if not self._collab_dimension or not ids:
            return {}
        records = self._shard.retrieve(ids, False, COLLAB_VECTORS)
        return {str(r.id): r.vector for r in records if r.vector}

    def write_collab(self, slot: int, factors: Mapping[str, Vector]) -> int:
        name = self._collab_name(slot)
        with self._lock:
            self._shard.update(
                qe.UpdateOperation.delete_vectors_by_filter(
                    qe.Filter(must=[qe.HasVectorCondition(name)]), [name]
                )
            )
        written = 0
        for chunk in point_chunks(factors):
            with self._lock:  # only items stored now: updating a missing point is an error
                stored = [str(r.id) for r in self._shard.retrieve(list(chunk), False, False)]
                if stored:
                    vectors = [
                        qe.PointVectors(p, {name: factors[chunk[p]].tolist()}) for p in stored
                    ]
                    self._shard.update(qe.UpdateOperation.update_vectors(vectors))
            written += len(stored)
        return written

    def read_collab(self, slot: int, item_ids: Sequence[str]) -> dict[str, Vector]:
        name = self._collab_name(slot)
        with self._lock:
            records = self._shard.retrieve([point_id(i) for i in item_ids], True, [name])
        return self._read.named(records, name)

    def search_blend(
        self,
        content: Vector,
        collab: Vector,
        slot: int,
        limit: int,
        flt: SearchFilter,
        with_vectors: bool = False,
    ) -> list[ScoredItem]:
        condition = _edge_filter(flt)
        request = qe.QueryRequest(
            limit=2 * limit,
            prefetches=[
                qe.Prefetch(
                    limit,
                    qe.Query.Nearest(content.tolist(), using=CONTENT_VECTOR),
                    filter=condition,
                ),
                qe.Prefetch(
                    limit,
                    qe.Query.Nearest(collab.tolist(), using=self._collab_name(slot)),
                    filter=condition,
                ),
            ],
            query=qe.Fusion.Rrf(k=RRF_K),  # type: ignore[arg-type]  # the stub omits Rrf
            with_payload=True,
            with_vector=_CONTENT_ONLY if with_vectors else False,
        )
        with self._lock:
            hits = self._shard.query(request)
        return self._read.hits(hits, with_vectors)

    def _collab_name(self, slot: int) -> str:
        return collab_vector_of(self._collection, self._collab_dimension, slot)

    def set_available(self, item_ids: Sequence[str], available: bool, updated_ms: int) -> None:
        payload = {"available": int(available), "updated_ms": updated_ms}
        with self._lock:
            self._shard.update(
                qe.UpdateOperation.set_payload([point_id(i) for i in item_ids], payload)
            )

    def delete(self, item_ids: Sequence[str]) -> None:
        with self._lock:
            self._shard.update(qe.UpdateOperation.delete_points([point_id(i) for i in item_ids]))

    def purge_deleted(self, before_ms: int) -> None:
        with self._lock:
            self._shard.update(
                qe.UpdateOperation.delete_points_by_filter(_deleted_before(before_ms))
            )

    def retrieve(
        self, item_ids: Sequence[str], with_vectors: bool = True, include_deleted: bool = False
    ) -> dict[str, ItemRecord]:
        if not item_ids:
            return {}
        with self._lock:
            records = self._shard.retrieve(
                [point_id(i) for i in item_ids], True, _CONTENT_ONLY if with_vectors else False
            )
        return self._read.records(records, with_vectors, include_deleted)

    def search(
        self, vector: Vector, limit: int, flt: SearchFilter, with_vectors: bool = False
    ) -> list[ScoredItem]:
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(vector.tolist(), using=CONTENT_VECTOR),
            filter=_edge_filter(flt),
            with_payload=True,
            with_vector=_CONTENT_ONLY if with_vectors else False,
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
            return int(self._shard.count(qe.CountRequest(filter=qe.Filter(must_not=[_DELETED]))))

    def flush(self) -> None:
        with self._lock:
            self._shard.flush()

    def close(self) -> None:
        with self._lock:
            self._shard.flush()
            self._shard.close()


def _edge_config(dimension: int, distance: Distance, collab_dimension: int) -> qe.EdgeConfig:
    metric = qe.Distance.Dot if distance == "dot" else qe.Distance.Cosine
    vectors = {CONTENT_VECTOR: qe.EdgeVectorParams(size=dimension, distance=metric)}
    if collab_dimension:  # dot: the length of an ALS factor carries meaning (popularity)
        for slot in COLLAB_SLOTS:
            vectors[collab_vector(slot)] = qe.EdgeVectorParams(
                size=collab_dimension, distance=qe.Distance.Dot
            )
    return qe.EdgeConfig(vectors=vectors)


def _stored_collab_dimension(path: Path) -> int:
    """The collab slots' dimension a shard was created with (0: none), from its config file."""
    vectors = orjson.loads((path / "edge_config.json").read_bytes()).get("vectors", {})
    slot = vectors.get(collab_vector(COLLAB_SLOTS[0]))
    return int(slot["size"]) if slot else 0


_SCHEMA_TYPES = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "integer": qe.PayloadSchemaType.Integer,
    "float": qe.PayloadSchemaType.Float,
}


def _create_payload_indexes(
    shard: qe.EdgeShard, filter_attributes: Mapping[str, AttributeType]
) -> None:
    """The payload indexes the shard lacks (an attribute declared filterable later gets its
    index over the items already stored)."""
    present = set(shard.info().payload_schema)
    for name, kind in payload_indexes(filter_attributes):
        if name not in present:
            shard.update(qe.UpdateOperation.create_field_index(name, _SCHEMA_TYPES[kind]))


_DELETED = qe.FieldCondition("deleted", match=qe.MatchValue(1))


def _deleted_before(before_ms: int) -> qe.Filter:
    return qe.Filter(
        must=[_DELETED, qe.FieldCondition("updated_ms", range=qe.RangeFloat(lt=before_ms))]
    )


def _edge_filter(flt: SearchFilter) -> qe.Filter:
    must: list[Any] = []
    must_not: list[Any] = [_DELETED]
    if flt.available_only:
        must.append(qe.FieldCondition("available", match=qe.MatchValue(1)))
    if flt.categories_in:
        must.append(qe.FieldCondition("category", match=qe.MatchAny(list(flt.categories_in))))
    if flt.categories_out:
        must_not.append(qe.FieldCondition("category", match=qe.MatchAny(list(flt.categories_out))))
    if flt.exclude_item_ids:
        must_not.append(qe.HasIdCondition({point_id(i) for i in flt.exclude_item_ids}))
    if flt.tags_any:
        must.append(qe.FieldCondition("tags", match=qe.MatchAny(list(flt.tags_any))))
    must += [_attribute_condition(c) for c in flt.attributes]
    return qe.Filter(must=must or None, must_not=must_not)


def _attribute_condition(condition: AttributeCondition) -> qe.FieldCondition:
    key = payload_key(condition.name)
    if not condition.is_range:
        return qe.FieldCondition(key, match=qe.MatchAny(list(condition.any)))
    bounds = qe.RangeFloat(gt=condition.gt, gte=condition.gte, lt=condition.lt, lte=condition.lte)
    return qe.FieldCondition(key, range=bounds)
