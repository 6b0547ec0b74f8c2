from __future__ import annotations

import orjson
import pytest

from recstream.schemas.errors import InvalidMessageError
from recstream.schemas.requests import (
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
    RequestCodec,
)

codec = RequestCodec()


def test_request_round_trip_with_every_option() -> None:
    request = RecommendRequest(
        "r1",
        10,
        user_id="u1",
        categories_in=("Drama",),
        categories_out=("Horror",),
        available_only=False,
        exclude=("i1", "i2"),
        diversity=0.5,
        preference_text="space opera",
        preference_categories=("Sci-Fi",),
        reply_to="reco.responses",
        reply_partition=3,
        deadline_ms=1_800_000_000_000,
        max_per_category=2,
    )
    assert codec.request(request.to_json()) == request


def test_more_like_this_request_has_defaults() -> None:
    decoded = codec.request(
        orjson.dumps({"schema_version": 1, "request_id": "r", "k": 5, "item_id": "m1"})
    )
    assert (decoded.item_id, decoded.user_id, decoded.diversity, decoded.available_only) == (
        "m1",
        None,
        None,  # the worker's RECSTREAM_DIVERSITY applies
        True,
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"k": 0},
        {"k": 101},
        {"k": "10"},
        {"item_id": "m1"},  # both a user and an item
        {"user_id": None},  # neither
        {"diversity": 1.5},
        {"filters": {"categories_in": "Drama"}},
        {"exclude": ["bad id"]},
        {"surprise": True},
        {"max_per_category": 0},
        {"max_per_category": 2.5},
    ],
)
def test_invalid_requests_are_refused_with_a_reason(changes: dict[str, object]) -> None:
    message = {"schema_version": 1, "request_id": "r", "k": 10, "user_id": "u1"} | changes
    message = {key: value for key, value in message.items() if value is not None}
    with pytest.raises(InvalidMessageError) as caught:
        codec.request(orjson.dumps(message))
    assert caught.value.reason == "schema_violation"


def test_response_round_trip() -> None:
    response = RecommendResponse(
        "r1",
        "ok",
        (RecommendedItem("m1", 0.91, ("similar to Heat",), "Ronin", "Action"),),
        model_version="items__all-minilm-l6-v2__384",
        strategy="personalised",
        timings_ms={"total": 4.2},
    )
    assert codec.response(response.to_json()) == response
    error = RecommendResponse("r2", "error", error="k: must be at most 100")
    assert codec.response(error.to_json()).error == "k: must be at most 100"
