from __future__ import annotations

import random

import orjson
import pytest

from recstream.schemas.errors import InvalidMessageError
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


def _one_by_one(raws: list[bytes | None]) -> list[InteractionEvent | str]:
    """Each message decoded alone: its event, or its refusal's reason."""
    out: list[InteractionEvent | str] = []
    for raw in raws:
        try:
            out.append(decoder.interaction(raw, NOW))
        except InvalidMessageError as error:
            out.append(error.reason)
    return out


def test_a_batch_is_decoded_at_once_only_when_every_message_would_be_alone() -> None:
    rng = random.Random(5)
    plain = [
        *(
            _interaction(event_id=f"e{n}", user_id=f"u{n % 3}", event_time=NOW - n)
            for n in range(5)
        ),
        _interaction(event_id="r", event_type="rating", value=4.5, session_id="s:1"),
        _interaction(event_id="v", value=-2),
    ]
    batches = 0
    for _ in range(400):
        messages = [rng.choice(plain) for _ in range(rng.randint(1, 6))]
        if rng.random() < 0.7:
            messages.insert(rng.randrange(len(messages) + 1), _mutations(rng))
        raws: list[bytes | None] = [orjson.dumps(m) for m in messages]
        alone = _one_by_one(raws)
        at_once = decoder.interactions(raws, NOW)
        if at_once is not None:
            batches += 1
            assert at_once == alone  # never accepts a message that alone is refused
        elif all(_plainly_valid_interaction(m) for m in messages):
            assert not all(isinstance(e, InteractionEvent) for e in alone)  # refused in time only
    assert batches > 100  # the corpus does exercise the batch path


@pytest.mark.parametrize(
    "bad",
    [
        None,
        b"\xff",
        b"[1]",
        orjson.dumps(_interaction(schema_version=True)),
        orjson.dumps(_interaction(user_id="a\nb")),  # both halves look like ids
        orjson.dumps(_interaction(item_id="x" * 129)),
        orjson.dumps(_interaction(event_id="")),
        orjson.dumps(_interaction(event_time=NOW + 3_600_000)),
        orjson.dumps(_interaction(event_time=1000)),
        orjson.dumps(_interaction(event_time=float(NOW))),
        orjson.dumps(_interaction(event_type="rating")),
        orjson.dumps(_interaction(value=True)),
        orjson.dumps(_interaction(value=2e6)),
        orjson.dumps(_interaction(session_id="no spaces")),
        orjson.dumps(_interaction(context={"device": "ios"})),  # valid, but not the fast path's
        b'{"schema_version": 1, "pad": "' + b"x" * 70_000 + b'"}',
    ],
)
def test_one_message_off_the_fast_path_sends_its_batch_one_by_one(bad: bytes | None) -> None:
    good = orjson.dumps(_interaction())
    assert decoder.interactions([good, good], NOW) == [decoder.interaction(good, NOW)] * 2
    assert decoder.interactions([good, bad, good], NOW) is None
    assert decoder.interactions([], NOW) == []
