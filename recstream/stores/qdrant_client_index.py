"""A Qdrant server through qdrant-client (scale-out mode). Tests use qdrant-client's local mode,
which speaks the same API, as the stand-in for a server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qdrant_client import QdrantClient, models

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


class QdrantClientIndex:
    """VectorIndex over one collection of a Qdrant server (or qdrant-client local mode)."""

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        dimension: int,
        distance: Distance = "cosine",
        cache_vectors: int = 0,
    ) -> None:
        self._client = client
        self._read = RecordReader(cache_vectors)
        self._collection = collection
        self._dimension = dimension
        self._distance = models.Distance.DOT if distance == "dot" else models.Distance.COSINE
        self._ensure_collection()

    @classmethod
    def connect(
        cls,
        url: str,
        collection: str,
        dimension: int,
        api_key: str | None = None,
        distance: Distance = "cosine",
        cache_vectors: int = 0,
    ) -> QdrantClientIndex:
        client = QdrantClient(url=url, api_key=api_key)
        return cls(client, collection, dimension, distance, cache_vectors)

    @classmethod
    def local(
        cls,
        location: str,
        collection: str,
        dimension: int,
        distance: Distance = "cosine",
        cache_vectors: int = 0,
    ) -> QdrantClientIndex:
        """qdrant-client's local mode: ':memory:' or a folder path."""
        client = (
            QdrantClient(location=location)
            if location == ":memory:"
            else QdrantClient(path=location)
        )
        return cls(client, collection, dimension, distance, cache_vectors)

    def _ensure_collection(self) -> None:
        if self._client.collection_exists(self._collection):
            return
        self._client.create_collection(
            self._collection,
            vectors_config={
                CONTENT_VECTOR: models.VectorParams(size=self._dimension, distance=self._distance)
            },
        )
        for name in KEYWORD_FIELDS:
            self._client.create_payload_index(
                self._collection, name, models.PayloadSchemaType.KEYWORD
            )
        for name in INTEGER_FIELDS:
            self._client.create_payload_index(
                self._collection, name, models.PayloadSchemaType.INTEGER
            )

    @property
    def collection(self) -> str:
        return self._collection

    @property
    def dimension(self) -> int:
        return self._dimension

    def upsert(self, items: Sequence[tuple[ItemPayload, Vector]]) -> None:
        points = [
            models.PointStruct(
                id=point_id(p.item_id), vector={CONTENT_VECTOR: v.tolist()}, payload=p.to_payload()
            )
            for p, v in items
        ]
        self._client.upsert(self._collection, points=points, wait=True)

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

    def retrieve(self, item_ids: Sequence[str], with_vectors: bool = True) -> dict[str, ItemRecord]:
        if not item_ids:
            return {}
        records = self._client.retrieve(
            self._collection,
            [point_id(i) for i in item_ids],
            with_payload=True,
            with_vectors=with_vectors,
        )
        return self._read.records(records, with_vectors)

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
            with_vectors=with_vectors,
        )
        return self._read.hits(response.points, with_vectors)

    def count(self) -> int:
        return int(self._client.count(self._collection, exact=True).count)

    def close(self) -> None:
        self._client.close()


def _client_filter(flt: SearchFilter) -> models.Filter | None:
    must: list[Any] = []
    must_not: list[Any] = []
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
    if not must and not must_not:
        return None
    return models.Filter(must=must or None, must_not=must_not or None)
