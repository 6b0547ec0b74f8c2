"""A Qdrant server through qdrant-client (scale-out mode). Tests use qdrant-client's local mode,
which speaks the same API, as the stand-in for a server."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qdrant_client import QdrantClient, models

from recstream.core.attributes import AttributeCondition, AttributeType, payload_key
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


class QdrantClientIndex:
    """VectorIndex over one collection of a Qdrant server (or qdrant-client local mode)."""

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        dimension: int,
        distance: Distance = "cosine",
        cache_vectors: int = 0,
        collab_dimension: int = 0,
        filter_attributes: Mapping[str, AttributeType] | None = None,
    ) -> None:
        self._client = client
        self._read = RecordReader(cache_vectors)
        self._collection = collection
        self._dimension = dimension
        self._distance = models.Distance.DOT if distance == "dot" else models.Distance.COSINE
        self._collab_dimension = collab_dimension
        self._ensure_collection()
        self._ensure_payload_indexes(filter_attributes or {})

    @classmethod
    def connect(
        cls,
        url: str,
        collection: str,
        dimension: int,
        api_key: str | None = None,
        distance: Distance = "cosine",
        cache_vectors: int = 0,
        collab_dimension: int = 0,
        filter_attributes: Mapping[str, AttributeType] | None = None,
    ) -> QdrantClientIndex:
        client = QdrantClient(url=url, api_key=api_key)
        return cls(
            client,
            collection,
            dimension,
            distance,
            cache_vectors,
            collab_dimension,
            filter_attributes,
        )

    @classmethod
    def local(
        cls,
        location: str,
        collection: str,
        dimension: int,
        distance: Distance = "cosine",
        cache_vectors: int = 0,
        collab_dimension: int = 0,
        filter_attributes: Mapping[str, AttributeType] | None = None,
    ) -> QdrantClientIndex:
        """qdrant-client's local mode: ':memory:' or a folder path (it keeps no payload
        indexes: it filters by scanning)."""
        client = (
            QdrantClient(location=location)
            if location == ":memory:"
            else QdrantClient(path=location)
        )
        return cls(
            client,
            collection,
            dimension,
            distance,
            cache_vectors,
            collab_dimension,
            filter_attributes,
        )

    def _ensure_collection(self) -> None:
        """Create the collection on first use; an existing one keeps its own vectors."""
        if self._client.collection_exists(self._collection):
            vectors = self._client.get_collection(self._collection).config.params.vectors
            first = (
                vectors.get(collab_vector(COLLAB_SLOTS[0])) if isinstance(vectors, dict) else None
            )
            self._collab_dimension = first.size if first else 0
            return
        config = {
            CONTENT_VECTOR: models.VectorParams(size=self._dimension, distance=self._distance)
        }
        if self._collab_dimension:  # dot: the length of an ALS factor carries meaning
            for slot in COLLAB_SLOTS:
                config[collab_vector(slot)] = models.VectorParams(
                    size=self._collab_dimension, distance=models.Distance.DOT
                )
        self._client.create_collection(self._collection, vectors_config=config)

    def _ensure_payload_indexes(self, filter_attributes: Mapping[str, AttributeType]) -> None:
        """Create the payload indexes the collection lacks (an attribute declared filterable
        later gets its index over the items already stored). Local mode keeps none: it warns
        and filters by scanning."""
        present = set(self._client.get_collection(self._collection).payload_schema)
        for name, kind in payload_indexes(filter_attributes):
            if name not in present:
                self._client.create_payload_index(self._collection, name, _SCHEMA_TYPES[kind])

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
        ids = [point_id(p.item_id) for p, _ in items]
        kept = self._collab_vectors_of(ids)
        points = [
            models.PointStruct(
                id=pid,
                vector={CONTENT_VECTOR: v.tolist()} | kept.get(pid, {}),
                payload=p.to_payload(),
            )
            for pid, (p, v) in zip(ids, items, strict=True)
        ]
        self._client.upsert(self._collection, points=points, wait=True)

    def _collab_vectors_of(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The collab vectors stored for these points: an upsert replaces a whole point, so the
        catalog's rewrite of an item must carry them over. (Against a server, a collab write
        between this read and the upsert would be lost for those items: versions are written
        rarely, catalog rewrites of trained items are rare, and the next version repairs it.)"""
        if not self._collab_dimension or not ids:
            return {}
        records = self._client.retrieve(
            self._collection, ids, with_payload=False, with_vectors=COLLAB_VECTORS
        )
        return {
            str(r.id): dict(r.vector) for r in records if isinstance(r.vector, dict) and r.vector
        }

    def write_collab(self, slot: int, factors: Mapping[str, Vector]) -> int:
        name = self._collab_name(slot)
        everything = models.Filter(must=[models.HasVectorCondition(has_vector=name)])
        self._client.delete_vectors(
            self._collection,
            vectors=[name],
            points=models.FilterSelector(filter=everything),
            wait=True,
        )
        written = 0
        for chunk in point_chunks(factors):
            stored = self._client.retrieve(self._collection, list(chunk), with_payload=False)
            vectors = [
                models.PointVectors(id=r.id, vector={name: factors[chunk[str(r.id)]].tolist()})
                for r in stored
            ]
            if vectors:  # only items stored now: updating a missing point is an error
                self._client.update_vectors(self._collection, vectors, wait=True)
            written += len(vectors)
        return written

    def read_collab(self, slot: int, item_ids: Sequence[str]) -> dict[str, Vector]:
        name = self._collab_name(slot)
        records = self._client.retrieve(
            self._collection,
            [point_id(i) for i in item_ids],
            with_payload=True,
            with_vectors=[name],
        )
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
        condition = _client_filter(flt)
        response = self._client.query_points(
            self._collection,
            prefetch=[
                models.Prefetch(
                    query=content.tolist(), using=CONTENT_VECTOR, limit=limit, filter=condition
                ),
                models.Prefetch(
                    query=collab.tolist(),
                    using=self._collab_name(slot),
                    limit=limit,
                    filter=condition,
                ),
            ],
            query=models.RrfQuery(rrf=models.Rrf(k=RRF_K)),
            limit=2 * limit,
            with_payload=True,
            with_vectors=_CONTENT_ONLY if with_vectors else False,
        )
        return self._read.hits(response.points, with_vectors)

    def _collab_name(self, slot: int) -> str:
        return collab_vector_of(self._collection, self._collab_dimension, slot)

    def set_available(self, item_ids: Sequence[str], available: bool, updated_ms: int) -> None:
        self._client.set_payload(
            self._collection,
            payload={"available": int(available), "updated_ms": updated_ms},
            points=[point_id(i) for i in item_ids],
            wait=True,
        )

    def delete(self, item_ids: Sequence[str]) -> None:
        selector = models.PointIdsList(points=[point_id(i) for i in item_ids])
        self._client.delete(self._collection, points_selector=selector, wait=True)

    def purge_deleted(self, before_ms: int) -> None:
        old_tombstones = models.Filter(
            must=[
                _DELETED,
                models.FieldCondition(key="updated_ms", range=models.Range(lt=before_ms)),
            ]
        )
        self._client.delete(
            self._collection,
            points_selector=models.FilterSelector(filter=old_tombstones),
            wait=True,
        )

    def retrieve(
        self, item_ids: Sequence[str], with_vectors: bool = True, include_deleted: bool = False
    ) -> dict[str, ItemRecord]:
        if not item_ids:
            return {}
        records = self._client.retrieve(
            self._collection,
            [point_id(i) for i in item_ids],
            with_payload=True,
            with_vectors=_CONTENT_ONLY if with_vectors else False,
        )
        return self._read.records(records, with_vectors, include_deleted)

    def search(
        self, vector: Vector, limit: int, flt: SearchFilter, with_vectors: bool = False
    ) -> list[ScoredItem]:
        response = self._client.query_points(
            self._collection,
            query=vector.tolist(),
            using=CONTENT_VECTOR,
            limit=limit,
            query_filter=_client_filter(flt),
            with_payload=True,
            with_vectors=_CONTENT_ONLY if with_vectors else False,
        )
        return self._read.hits(response.points, with_vectors)

    def count(self) -> int:
        live = models.Filter(must_not=[_DELETED])
        return int(self._client.count(self._collection, count_filter=live, exact=True).count)

    def flush(self) -> None:
        """Every write waits for the server's acknowledgement (wait=True): nothing to do."""

    def close(self) -> None:
        self._client.close()


_DELETED = models.FieldCondition(key="deleted", match=models.MatchValue(value=1))
_SCHEMA_TYPES = {
    "keyword": models.PayloadSchemaType.KEYWORD,
    "integer": models.PayloadSchemaType.INTEGER,
    "float": models.PayloadSchemaType.FLOAT,
}


def _client_filter(flt: SearchFilter) -> models.Filter:
    must: list[Any] = []
    must_not: list[Any] = [_DELETED]
    if flt.available_only:
        must.append(models.FieldCondition(key="available", match=models.MatchValue(value=1)))
    if flt.categories_in:
        must.append(
            models.FieldCondition(
                key="category", match=models.MatchAny(any=list(flt.categories_in))
            )
        )
    if flt.categories_out:
        must_not.append(
            models.FieldCondition(
                key="category", match=models.MatchAny(any=list(flt.categories_out))
            )
        )
    if flt.exclude_item_ids:
        must_not.append(models.HasIdCondition(has_id=[point_id(i) for i in flt.exclude_item_ids]))
    if flt.tags_any:
        tags = models.MatchAny(any=list(flt.tags_any))
        must.append(models.FieldCondition(key="tags", match=tags))
    must += [_attribute_condition(c) for c in flt.attributes]
    return models.Filter(must=must or None, must_not=must_not)


def _attribute_condition(condition: AttributeCondition) -> models.FieldCondition:
    key = payload_key(condition.name)
    if not condition.is_range:
        return models.FieldCondition(key=key, match=models.MatchAny(any=list(condition.any)))
    bounds = models.Range(gt=condition.gt, gte=condition.gte, lt=condition.lt, lte=condition.lte)
    return models.FieldCondition(key=key, range=bounds)
