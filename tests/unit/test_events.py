from __future__ import annotations

import random

import orjson
import pytest

from recstream.errors import InvalidMessageError
from recstream.schemas.events import (
    CatalogEvent,
    EventDecoder,
    InteractionEvent,
    TimeBounds,
    _plainly_valid_interaction,
    compile_schema,
)

NOW = 1_795_000_000_000
decoder = EventDecoder()


def _interaction(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "schema_version": 1,
        "event_id": "e-1",
        "user_id": "u:1",
        "item_id": "i/1",
        "event_type": "click",
        "event_time": NOW,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def test_round_trip_of_both_event_kinds() -> None:
    event = InteractionEvent(
        "e1",
        "u1",
        "i1",
        "rating",
        NOW,
        value=4.5,
        session_id="s1",
        context={"device": "ios", "position": 3},
    )
    assert decoder.interaction(event.to_json(), NOW) == event
    item = CatalogEvent(
        "c1",
        "i1",
        "upsert",
        NOW,
        title="Toy Story",
        category="Animation",
        tags=("pixar", "kids"),
        attributes={"year": 1995},
        available=False,
    )
    assert decoder.catalog(item.to_json(), NOW) == item


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "undecodable"),
        (b"[1, 2]", "undecodable"),
        (None, "undecodable"),
        (orjson.dumps(_interaction(schema_version=2)), "unknown_schema_version"),
        (orjson.dumps(_interaction(event_type="teleport")), "schema_violation"),
        (orjson.dumps(_interaction(event_type=["click"])), "schema_violation"),
        (orjson.dumps(_interaction(event_time=True)), "schema_violation"),
        (orjson.dumps(_interaction(user_id="has space")), "schema_violation"),
        (orjson.dumps(_interaction(event_type="rating")), "schema_violation"),
        (orjson.dumps(_interaction(extra="x")), "schema_violation"),
        (orjson.dumps(_interaction(item_id="x" * 129)), "oversized"),
        (b'{"schema_version": 1, "pad": "' + b"x" * 70_000 + b'"}', "oversized"),
        (orjson.dumps(_interaction(event_time=NOW + 3_600_000)), "event_time_out_of_range"),
        (orjson.dumps(_interaction(event_time=1000)), "event_time_out_of_range"),
    ],
)
def test_bad_interactions_are_refused_with_a_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidMessageError) as caught:
        decoder.interaction(raw, NOW)
    assert caught.value.reason == reason


def test_time_bounds_are_configurable() -> None:
    lenient = EventDecoder(TimeBounds(earliest_ms=0, max_future_skew_ms=24 * 3600 * 1000))
    raw = orjson.dumps(_interaction(event_time=NOW + 3_600_000))
    assert lenient.interaction(raw, NOW).event_time == NOW + 3_600_000


def test_catalog_upsert_needs_a_title_and_delete_does_not() -> None:
    upsert = {
        "schema_version": 1,
        "event_id": "c",
        "item_id": "i",
        "op": "upsert",
        "event_time": NOW,
    }
    with pytest.raises(InvalidMessageError, match="title"):
        decoder.catalog(orjson.dumps(upsert), NOW)
    assert decoder.catalog(orjson.dumps(upsert | {"op": "delete"}), NOW).op == "delete"
    too_many_tags = upsert | {"title": "t", "tags": [f"t{i}" for i in range(65)]}
    with pytest.raises(InvalidMessageError) as caught:
        decoder.catalog(orjson.dumps(too_many_tags), NOW)
    assert caught.value.reason == "oversized"


def _mutations(rng: random.Random) -> dict[str, object]:
    values: list[object] = [
        None,
        "",
        "ok",
        "bad id",
        "x" * 200,
        0,
        -5,
        1.5,
        True,
        [],
        {},
        NOW,
        "rating",
        "view",
        2,
        1e7,
    ]
    message = _interaction()
    for _ in range(rng.randint(1, 3)):
        key = rng.choice([*message.keys(), "value", "session_id", "context", "other"])
        message[key] = rng.choice(values)
    return {k: v for k, v in message.items() if v is not None}


def test_fast_path_never_accepts_what_the_schema_refuses() -> None:
    full = compile_schema("interaction_event")
    rng = random.Random(11)
    accepted_fast = 0
    for _ in range(3000):
        message = _mutations(rng)
        if _plainly_valid_interaction(message):
            accepted_fast += 1
            full(message)  # raises if the fast path was wrong
    assert accepted_fast > 100  # the corpus does exercise the fast path
