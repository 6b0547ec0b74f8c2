"""Filters on item attributes, the pure part: conditions, typing, the CLI's --where, the request
contract and the settings."""

from __future__ import annotations

import pytest

from recstream.core.attributes import (
    AttributeCondition,
    AttributeType,
    admits,
    check_filterable,
    parse_where,
    typed_attributes,
)
from recstream.core.errors import SettingsError
from recstream.core.index import ItemPayload, SearchFilter, payload_indexes
from recstream.core.settings import load_settings
from recstream.schemas.errors import InvalidMessageError
from recstream.schemas.requests import RecommendRequest, RequestCodec

pytestmark = pytest.mark.unit

DECLARED: dict[str, AttributeType] = {"year": "number", "price": "keyword"}


def test_a_range_holds_for_numbers_within_every_bound_set() -> None:
    nineties = AttributeCondition("year", gte=1990, lt=2000)
    assert [nineties.holds_for(y) for y in (1989, 1990, 1999.5, 2000)] == [0, 1, 1, 0]
    assert not nineties.holds_for(None)  # a missing value never does
    assert not nineties.holds_for("1995")  # nor a value of another type
    assert not nineties.holds_for(True)
    assert AttributeCondition("year", gt=1990, lte=1991).holds_for(1991)


def test_a_keyword_condition_holds_for_one_of_its_values() -> None:
    cheap = AttributeCondition("price", any=("low", "medium"))
    assert [cheap.holds_for(v) for v in ("low", "medium", "high", None, 1)] == [1, 1, 0, 0, 0]


def test_admits_needs_a_shared_tag_and_every_condition() -> None:
    attributes = {"year": 1995, "price": "low"}
    conditions = (AttributeCondition("year", gte=1990), AttributeCondition("price", any=("low",)))
    assert admits(attributes, ("comedy",), ("comedy", "drama"), conditions)
    assert not admits(attributes, ("horror",), ("comedy",), conditions)
    assert not admits(attributes | {"year": 1980}, ("comedy",), (), conditions)
    assert admits({}, (), (), ())  # no conditions: everything


def test_the_search_filter_admits_what_its_payload_conditions_allow() -> None:
    payload = ItemPayload("m1", "t", "Comedy", ("classic",), True, "h", 0, {"year": 1995})
    assert SearchFilter(tags_any=("classic",)).admits(payload)
    assert not SearchFilter(tags_any=("new",)).admits(payload)
    assert not SearchFilter(attributes=(AttributeCondition("year", lt=1990),)).admits(payload)
    assert not SearchFilter(categories_out=("Comedy",)).admits(payload)


def test_only_declared_attributes_of_the_right_kind_can_be_filtered() -> None:
    check_filterable(
        (AttributeCondition("year", gte=1), AttributeCondition("price", ("a",))), DECLARED
    )
    with pytest.raises(ValueError, match=r"'colour' is not filterable .*declares: price, year"):
        check_filterable((AttributeCondition("colour", ("red",)),), DECLARED)
    with pytest.raises(ValueError, match="'year' is a number: filter it by a range"):
        check_filterable((AttributeCondition("year", ("1995",)),), DECLARED)
    with pytest.raises(ValueError, match="'price' is a keyword: filter it by values"):
        check_filterable((AttributeCondition("price", gte=1),), DECLARED)


def test_declared_attributes_are_typed_as_their_index_expects() -> None:
    typed = typed_attributes(
        {"year": "1995", "price": 2, "genres": "a, b", "weight": "1.5"},
        {"year": "number", "price": "keyword", "weight": "number"},
    )
    assert typed == {"year": 1995, "price": "2", "genres": "a, b", "weight": 1.5}
    assert typed_attributes({"price": True}, {"price": "keyword"}) == {"price": "true"}
    for bad in ("soon", True, "nan", "inf"):
        with pytest.raises(ValueError, match="'year' is a number"):
            typed_attributes({"year": bad}, {"year": "number"})


def test_where_expressions_become_one_condition_per_attribute() -> None:
    conditions = parse_where(["year>=1990", "year < 2000", "price=low, medium"])
    assert conditions == (
        AttributeCondition("price", any=("low", "medium")),
        AttributeCondition("year", gte=1990.0, lt=2000.0),
    )
    for bad, message in (
        ("year~1990", "cannot read"),
        ("year>=old", "not a number"),
        ("oops", "cannot read"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_where([bad])
    with pytest.raises(ValueError, match="cannot be mixed"):
        parse_where(["year=1990", "year>1980"])


def test_filters_travel_in_the_request_and_bad_ones_are_refused() -> None:
    codec = RequestCodec()
    request = RecommendRequest(
        "r1",
        5,
        user_id="u1",
        tags_any=("classic",),
        attributes=(
            AttributeCondition("price", any=("low",)),
            AttributeCondition("year", gte=1990.0, lt=2000.0),
        ),
    )
    assert codec.request(request.to_json()) == request
    base = b'{"schema_version":1,"request_id":"r","k":1,"user_id":"u","filters":{"attributes":'
    for bad in (
        b'{"year":{}}',
        b'{"year":{"any":[]}}',
        b'{"year":{"gte":"x"}}',
        b'{"a.b":{"gt":1}}',
    ):
        with pytest.raises(InvalidMessageError, match="attributes"):
            codec.request(base + bad + b"}}")


def test_the_filterable_attributes_setting_is_read_and_checked() -> None:
    settings = load_settings(
        {"RECSTREAM_FILTER_ATTRIBUTES": '{"year": "number", "brand": "keyword"}'}
    )
    assert settings.filter_attributes == {"year": "number", "brand": "keyword"}
    assert load_settings({}).filter_attributes == {}
    for bad in ('{"year": "date"}', '{"a.b": "number"}', "[1]"):
        with pytest.raises(SettingsError, match="RECSTREAM_FILTER_ATTRIBUTES"):
            load_settings({"RECSTREAM_FILTER_ATTRIBUTES": bad})


def test_every_filterable_attribute_gets_a_payload_index() -> None:
    indexes = dict(payload_indexes({"year": "number", "price": "keyword"}))
    assert indexes["attributes.year"] == "float" and indexes["attributes.price"] == "keyword"
    assert indexes["category"] == "keyword" and indexes["available"] == "integer"
