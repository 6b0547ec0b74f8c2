"""The vector topic's records and what a replica makes of them (pure parts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recstream.core.index import ItemPayload
from recstream.infra.stores.item_vectors import ItemVectorCopy
from recstream.schemas.errors import InvalidMessageError
from recstream.schemas.vectors import VectorRecord, decode_vector_record
from recstream.streams.replica import Checkpoint, plan_replica_batch

pytestmark = pytest.mark.unit


def _payload(item: str, updated_ms: int, **changes: object) -> ItemPayload:
    fields: dict[str, object] = {
        "item_id": item,
        "title": f"Title {item}",
        "category": "Drama",
        "tags": ("a", "b"),
        "available": True,
        "content_hash": "h",
        "updated_ms": updated_ms,
        "attributes": {"year": 1999},
    }
    return ItemPayload(**(fields | changes))  # type: ignore[arg-type]


def _vector(seed: int, dimension: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=dimension).astype(np.float32)


def test_a_vector_record_survives_encoding_exactly() -> None:
    record = VectorRecord(_payload("m1", 5, deleted=True, available=False), _vector(1))
    decoded = decode_vector_record(record.encode())
    assert decoded.payload == record.payload
    assert decoded.vector.dtype == np.float32
    np.testing.assert_array_equal(decoded.vector, record.vector)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (b"\x01\x00", "header"),
        (b"\x02\x00\x00\x00\x02{}\x00\x00\x80\x3f", "version 2"),
        (b"\x01\x00\x00\x00\x02{}", "0 vector bytes"),
        (b"\x01\x00\x00\x00\x02{}\x00\x00\x80", "3 vector bytes"),
        (b"\x01\x00\x00\x00\x02{}\x00\x00\x80\x3f", "payload"),  # no item_id
    ],
)
def test_a_broken_vector_record_is_refused_with_its_reason(value: bytes, says: str) -> None:
    with pytest.raises(InvalidMessageError, match=says):
        decode_vector_record(value)


def test_the_last_record_of_an_item_wins_and_older_ones_than_stored_are_skipped() -> None:
    stored = {"kept": _payload("kept", 10), "same": _payload("same", 3)}
    records = [
        ("new", VectorRecord(_payload("new", 1), _vector(1))),
        ("new", VectorRecord(_payload("new", 2, title="later"), _vector(2))),
        ("kept", VectorRecord(_payload("kept", 9), _vector(3))),  # older than stored
        ("same", VectorRecord(_payload("same", 3), _vector(4))),  # what is stored
        ("gone", None),
    ]
    plan = plan_replica_batch(records, stored)
    assert [(p.item_id, p.title) for p, _ in plan.upserts] == [("new", "later")]
    np.testing.assert_array_equal(plan.upserts[0][1], _vector(2))
    assert plan.removals == ["gone"]
    assert plan.outcomes == {
        "superseded": 1,
        "applied": 1,
        "stale": 1,
        "unchanged": 1,
        "removed": 1,
    }


def test_a_newer_record_replaces_the_stored_one_and_a_tombstone_is_a_record_too() -> None:
    stored = {"m": _payload("m", 10)}
    tombstone = _payload("m", 11).tombstone(11)
    plan = plan_replica_batch([("m", VectorRecord(tombstone, _vector(1)))], stored)
    assert [p for p, _ in plan.upserts] == [tombstone]


def test_a_checkpoint_is_read_back_only_for_its_own_topic(tmp_path: Path) -> None:
    checkpoint = Checkpoint(tmp_path / "offsets.json")
    assert checkpoint.load("t") == {}
    checkpoint.save("t", {0: 5, 3: 7})
    assert checkpoint.load("t") == {0: 5, 3: 7}
    assert checkpoint.load("other") == {}
    assert Checkpoint(None).load("t") == {}


def test_the_float16_copy_answers_like_an_index_at_half_precision() -> None:
    copy = ItemVectorCopy("all-MiniLM-L6-v2")
    assert copy.dimension == 0
    vectors = {f"i{n}": _vector(n, 384) for n in range(1500)}  # grows past its first rows
    copy.upsert([(_payload(i, 1), v) for i, v in vectors.items()])
    assert (copy.dimension, copy.collection) == (384, "items__all-minilm-l6-v2__384")
    assert copy.count() == 1500
    found = copy.retrieve(["i7", "nope"])
    assert list(found) == ["i7"]
    np.testing.assert_array_equal(
        found["i7"].vector, vectors["i7"].astype(np.float16).astype(np.float32)
    )
    assert found["i7"].payload.category == "Drama"
    assert found["i7"].payload.title == ""  # the processor reads no titles: not kept


def test_the_float16_copy_hides_tombstones_purges_old_ones_and_reuses_rows() -> None:
    copy = ItemVectorCopy("m", 4)
    copy.upsert([(_payload("a", 1), _vector(1, 4)), (_payload("b", 1), _vector(2, 4))])
    copy.upsert([(_payload("a", 5).tombstone(5), _vector(1, 4))])
    assert copy.retrieve(["a"]) == {}
    assert copy.retrieve(["a"], include_deleted=True)["a"].payload.deleted
    assert copy.count() == 1
    copy.purge_deleted(before_ms=4)  # deleted at 5: kept
    assert "a" in copy.retrieve(["a"], include_deleted=True)
    copy.purge_deleted(before_ms=6)
    assert copy.retrieve(["a"], include_deleted=True) == {}
    rows = copy.nbytes()
    copy.upsert([(_payload("c", 1), _vector(3, 4))])  # takes the freed row
    copy.delete(["b", "unknown"])
    assert copy.nbytes() == rows
    assert list(copy.retrieve(["a", "b", "c"])) == ["c"]
    with pytest.raises(ValueError, match="8-dimensional"):
        copy.upsert([(_payload("d", 1), _vector(4, 8))])
