"""One contract every VectorIndex backend must pass: embedded Qdrant (qdrant-edge-py), the
Qdrant server API (qdrant-client, in its local mode as the server's stand-in) and the in-memory
numpy index the offline evaluation uses; the two Qdrant adapters also with a memo of decoded
vectors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from recstream.core.attributes import AttributeCondition
from recstream.core.errors import RecstreamError
from recstream.core.index import (
    Distance,
    ItemPayload,
    SearchFilter,
    Vector,
    VectorIndex,
    collection_name,
)
from recstream.infra.stores.memory_index import InMemoryVectorIndex
from recstream.infra.stores.qdrant_client_index import QdrantClientIndex
from recstream.infra.stores.qdrant_edge_index import QdrantEdgeIndex

DIM = 16
COLLAB_DIM = 4


def _payload(item_id: str, category: str = "a", available: bool = True) -> ItemPayload:
    return ItemPayload(
        item_id, f"title {item_id}", category, ("t1",), available, f"h-{item_id}", 1000
    )


def _unit(rng: np.random.Generator) -> Vector:
    v = rng.normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


BACKENDS = ["edge", "client-local", "memory", "edge-cached", "client-local-cached"]


def _open(
    kind: str, tmp_path: Path, distance: Distance = "cosine", collab: int = COLLAB_DIM
) -> VectorIndex:
    name = collection_name("test-model", DIM)
    cache = 8 if kind.endswith("-cached") else 0  # fewer than a search returns: evictions too
    if kind.startswith("edge"):
        return QdrantEdgeIndex.open(tmp_path / name, name, DIM, distance, cache, collab)
    if kind.startswith("client-local"):
        return QdrantClientIndex.local(str(tmp_path / "client"), name, DIM, distance, cache, collab)
    return InMemoryVectorIndex(name, DIM, distance, collab)


@pytest.fixture(params=BACKENDS)
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorIndex]:
    backend = _open(request.param, tmp_path)
    yield backend
    backend.close()


@pytest.mark.parametrize("kind", BACKENDS)
def test_dot_distance_keeps_lengths_and_ranks_by_dot_product(kind: str, tmp_path: Path) -> None:
    """ALS factors: a long vector (a popular item) must outrank a better-aligned short one."""
    index = _open(kind, tmp_path, "dot")
    try:
        aligned = np.zeros(DIM, dtype=np.float32)
        aligned[0] = 1.0
        long = np.zeros(DIM, dtype=np.float32)
        long[0], long[1] = 3.0, 3.0
        index.upsert([(_payload("aligned"), aligned), (_payload("long"), long)])
        hits = index.search(aligned, 2, SearchFilter())
        assert [h.payload.item_id for h in hits] == ["long", "aligned"]
        assert hits[0].score == pytest.approx(3.0)
        stored = index.retrieve(["long"])["long"].vector
        assert stored is not None
        np.testing.assert_allclose(stored, long)
    finally:
        index.close()


@pytest.fixture
def vectors() -> dict[str, Vector]:
    rng = np.random.default_rng(7)
    return {f"i{n}": _unit(rng) for n in range(40)}


def _fill(index: VectorIndex, vectors: dict[str, Vector]) -> None:
    index.upsert(
        [
            (_payload(i, "a" if n % 2 else "b", available=n % 5 != 0), v)
            for n, (i, v) in enumerate(vectors.items())
        ]
    )


def test_collection_name_carries_model_and_dimension() -> None:
    assert collection_name("sentence-transformers/all-MiniLM-L6-v2", 384) == (
        "items__sentence-transformers-all-minilm-l6-v2__384"
    )


def test_upsert_retrieve_round_trip(index: VectorIndex, vectors: dict[str, Vector]) -> None:
    _fill(index, vectors)
    assert index.count() == 40
    got = index.retrieve(["i1", "i2", "missing"])
    assert set(got) == {"i1", "i2"}
    assert got["i1"].payload == _payload("i1", "a")
    assert got["i1"].vector is not None
    np.testing.assert_allclose(got["i1"].vector, vectors["i1"], atol=1e-6)


def test_search_orders_by_cosine_and_matches_brute_force(
    index: VectorIndex, vectors: dict[str, Vector]
) -> None:
    _fill(index, vectors)
    query = vectors["i3"]
    hits = index.search(query, 5, SearchFilter(available_only=False))
    ids = list(vectors)
    scores = np.stack([vectors[i] for i in ids]) @ query
    expected = [ids[j] for j in np.argsort(-scores)[:5]]
    assert [h.payload.item_id for h in hits] == expected
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_filters_availability_categories_and_excluded_ids(
    index: VectorIndex, vectors: dict[str, Vector]
) -> None:
    _fill(index, vectors)
    hits = index.search(
        vectors["i3"],
        40,
        SearchFilter(available_only=True, categories_in=("a",), exclude_item_ids=("i3", "i7")),
    )
    found = {h.payload.item_id for h in hits}
    expected = {f"i{n}" for n in range(40) if n % 2 and n % 5 and n not in (3, 7)}
    assert found == expected
    outside = index.search(
        vectors["i3"], 40, SearchFilter(available_only=False, categories_out=("a",))
    )
    assert {h.payload.category for h in outside} == {"b"}


def _fill_with_attributes(index: VectorIndex, vectors: dict[str, Vector]) -> None:
    index.upsert(
        [
            (
                replace(
                    _payload(i, available=n % 5 != 0),
                    tags=("even",) if n % 2 == 0 else ("odd", "prime") if n in (3, 5, 7) else (),
                    attributes={"year": 1980 + n, "price": ("low", "high")[n % 2]},
                ),
                v,
            )
            for n, (i, v) in enumerate(vectors.items())
        ]
    )


def test_filters_tags_and_attributes_inside_the_search(
    index: VectorIndex, vectors: dict[str, Vector]
) -> None:
    _fill_with_attributes(index, vectors)
    nineties = AttributeCondition("year", gte=1990, lt=2000)
    cheap = AttributeCondition("price", any=("low",))
    flt = SearchFilter(attributes=(nineties, cheap), tags_any=("even", "prime"))
    found = {h.payload.item_id for h in index.search(vectors["i3"], 40, flt)}
    assert found == {f"i{n}" for n in range(10, 20) if n % 2 == 0 and n % 5}
    odd = SearchFilter(available_only=False, tags_any=("prime",))
    assert {h.payload.item_id for h in index.search(vectors["i3"], 40, odd)} == {"i3", "i5", "i7"}
    ranged = SearchFilter(available_only=False, attributes=(AttributeCondition("year", gt=2018),))
    assert {h.payload.item_id for h in index.search(vectors["i3"], 40, ranged)} == {"i39"}
    for hit in index.search(vectors["i3"], 40, flt):
        assert flt.admits(hit.payload)  # the index and the payload check agree


def test_set_available_and_delete(index: VectorIndex, vectors: dict[str, Vector]) -> None:
    _fill(index, vectors)
    index.set_available(["i1"], False, 2000)
    record = index.retrieve(["i1"])["i1"]
    assert record.payload.available is False
    assert record.payload.updated_ms == 2000
    assert "i1" not in {h.payload.item_id for h in index.search(vectors["i1"], 40, SearchFilter())}
    index.delete(["i1", "never-existed"])
    assert index.retrieve(["i1"]) == {}
    assert index.count() == 39


def test_a_tombstone_is_never_searched_nor_retrieved_but_on_purpose_and_is_purged(
    index: VectorIndex, vectors: dict[str, Vector]
) -> None:
    _fill(index, vectors)
    stored = index.retrieve(["i1", "i2"])
    index.upsert(
        [
            (stored["i1"].payload.tombstone(2000), vectors["i1"]),
            (stored["i2"].payload.tombstone(5000), vectors["i2"]),
        ]
    )
    anywhere = SearchFilter(available_only=False)
    found = {h.payload.item_id for h in index.search(vectors["i1"], 40, anywhere)}
    assert found == {f"i{n}" for n in range(40)} - {"i1", "i2"}
    assert index.retrieve(["i1", "i2"]) == {}
    tombstones = index.retrieve(["i1", "i2"], include_deleted=True)
    assert {i: (r.payload.deleted, r.payload.updated_ms) for i, r in tombstones.items()} == {
        "i1": (True, 2000),
        "i2": (True, 5000),
    }
    assert index.count() == 38
    index.purge_deleted(before_ms=3000)
    assert set(index.retrieve(["i1", "i2"], include_deleted=True)) == {"i2"}
    assert index.count() == 38
    index.upsert([(stored["i2"].payload, vectors["i2"])])  # the item comes back
    assert set(index.retrieve(["i1", "i2"])) == {"i2"}
    assert index.count() == 39


def test_vectors_come_back_with_hits_and_follow_a_rewritten_item(
    index: VectorIndex, vectors: dict[str, Vector]
) -> None:
    _fill(index, vectors)
    for _ in range(2):  # the second pass reads through a cache where there is one
        hits = index.search(vectors["i1"], 12, SearchFilter(available_only=False), True)
        assert len(hits) == 12
        for hit in hits:
            assert hit.vector is not None
            np.testing.assert_allclose(hit.vector, vectors[hit.payload.item_id], atol=1e-6)
    rewritten = replace(index.retrieve(["i1"])["i1"].payload, content_hash="h-new", updated_ms=3000)
    index.upsert([(rewritten, vectors["i2"])])
    got = index.retrieve(["i1"])["i1"].vector
    assert got is not None
    np.testing.assert_allclose(got, vectors["i2"], atol=1e-6)
    hits = index.search(vectors["i2"], 2, SearchFilter(available_only=False), True)
    assert {h.payload.item_id for h in hits} == {"i1", "i2"}
    for hit in hits:
        assert hit.vector is not None
        np.testing.assert_allclose(hit.vector, vectors["i2"], atol=1e-6)


def test_reopening_keeps_the_data(tmp_path: Path, vectors: dict[str, Vector]) -> None:
    name = collection_name("test-model", DIM)
    first = QdrantEdgeIndex.open(tmp_path / name, name, DIM)
    _fill(first, vectors)
    first.close()
    again = QdrantEdgeIndex.open(tmp_path / name, name, DIM)
    try:
        assert again.count() == 40
        assert again.retrieve(["i5"])["i5"].payload.item_id == "i5"
    finally:
        again.close()


def test_filterable_attributes_are_indexed_also_when_declared_after_creation(
    tmp_path: Path, vectors: dict[str, Vector]
) -> None:
    name = collection_name("test-model", DIM)
    first = QdrantEdgeIndex.open(tmp_path / name, name, DIM)
    _fill_with_attributes(first, vectors)
    assert "attributes.year" not in first.payload_index_types()
    first.close()
    again = QdrantEdgeIndex.open(
        tmp_path / name, name, DIM, filter_attributes={"year": "number", "price": "keyword"}
    )
    try:
        indexes = again.payload_index_types()
        assert indexes["attributes.year"] == "float"
        assert indexes["attributes.price"] == "keyword"
        assert indexes["category"] == "keyword" and indexes["deleted"] == "integer"
        flt = SearchFilter(attributes=(AttributeCondition("year", lte=1981),))
        found = {h.payload.item_id for h in again.search(vectors["i1"], 40, flt)}
        assert found == {"i1"}  # i0 is unavailable; the items stored before are in the index
    finally:
        again.close()


def _factors(items: list[str], seed: int = 11) -> dict[str, Vector]:
    rng = np.random.default_rng(seed)
    return {i: rng.normal(size=COLLAB_DIM).astype(np.float32) for i in items}


def test_collab_slots_are_written_whole_and_apart(
    index: VectorIndex, vectors: dict[str, Vector]
) -> None:
    _fill(index, vectors)
    assert index.collab_dimension == COLLAB_DIM
    first = _factors(["i1", "i2", "i3"])
    assert index.write_collab(0, first | {"not-stored": first["i1"]}) == 3
    read = index.read_collab(0, ["i1", "i2", "i3", "i4", "not-stored"])
    assert set(read) == {"i1", "i2", "i3"}
    np.testing.assert_allclose(read["i2"], first["i2"], atol=1e-6)
    other = _factors(["i4"], seed=12)
    assert index.write_collab(1, other) == 1
    assert index.write_collab(0, {"i1": other["i4"]}) == 1  # a new version replaces the slot
    assert set(index.read_collab(0, ["i1", "i2", "i3"])) == {"i1"}
    np.testing.assert_allclose(index.read_collab(0, ["i1"])["i1"], other["i4"], atol=1e-6)
    assert set(index.read_collab(1, ["i1", "i4"])) == {"i4"}  # the other slot untouched
    assert index.write_collab(1, {"not-stored": other["i4"]}) == 0  # nothing known: emptied
    assert index.read_collab(1, ["i1", "i4"]) == {}


def test_a_catalog_rewrite_keeps_the_collab_vectors(
    index: VectorIndex, vectors: dict[str, Vector]
) -> None:
    _fill(index, vectors)
    factors = _factors(["i1"])
    index.write_collab(1, factors)
    rewritten = replace(index.retrieve(["i1"])["i1"].payload, content_hash="h-new", updated_ms=9)
    index.upsert([(rewritten, vectors["i2"])])
    np.testing.assert_allclose(index.read_collab(1, ["i1"])["i1"], factors["i1"], atol=1e-6)
    stored = index.retrieve(["i1"])["i1"]
    assert stored.payload.content_hash == "h-new" and stored.vector is not None
    np.testing.assert_allclose(stored.vector, vectors["i2"], atol=1e-6)


def test_search_blend_fuses_both_spaces_under_the_filter(
    index: VectorIndex, vectors: dict[str, Vector]
) -> None:
    _fill(index, vectors)  # odd items in category a, every fifth unavailable
    liked = np.zeros(COLLAB_DIM, dtype=np.float32)
    liked[0] = 1.0
    factors = {i: -liked for i in vectors} | {"i9": 5 * liked, "i11": 3 * liked}
    index.write_collab(1, factors)
    anywhere = SearchFilter(available_only=False)
    hits = index.search_blend(vectors["i3"], liked, 1, 2, anywhere, with_vectors=True)
    by_content = [h.payload.item_id for h in index.search(vectors["i3"], 2, anywhere)]
    assert {h.payload.item_id for h in hits} == set(by_content) | {"i9", "i11"}
    assert [h.payload.item_id for h in hits][:2] in (["i3", "i9"], ["i9", "i3"])  # both firsts
    for hit in hits:  # the content vectors, for the ranking after
        assert hit.vector is not None
        np.testing.assert_allclose(hit.vector, vectors[hit.payload.item_id], atol=1e-6)
    only_b = SearchFilter(available_only=False, categories_in=("b",), exclude_item_ids=("i3",))
    filtered = {h.payload.item_id for h in index.search_blend(vectors["i3"], liked, 1, 2, only_b)}
    assert filtered and all(int(i[1:]) % 2 == 0 for i in filtered)  # i9 and i11 are in a


def test_an_index_without_collab_slots_refuses_collab_writes(tmp_path: Path) -> None:
    for kind in ("edge", "client-local", "memory"):
        index = _open(kind, tmp_path / kind, collab=0)
        try:
            assert index.collab_dimension == 0
            with pytest.raises(RecstreamError, match="no collaborative slots"):
                index.write_collab(0, {})
        finally:
            index.close()


def test_reopening_keeps_the_collab_slots_of_creation(tmp_path: Path) -> None:
    for kind in ("edge", "client-local"):
        _open(kind, tmp_path / kind).close()
        again = _open(kind, tmp_path / kind, collab=COLLAB_DIM * 2)  # asks for another size
        try:
            assert again.collab_dimension == COLLAB_DIM  # what the collection was created with
        finally:
            again.close()
