"""The pure decision of one answer (consumers/decide.py): candidates from a read context, the
ranked list, and the top-up of a short list from the popular items."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from recstream.consumers.decide import (
    NEXT_DECAY,
    Anchor,
    QueryConfig,
    QueryContext,
    TopUp,
    candidates,
    decide,
    top_up,
)
from recstream.consumers.ranking import RankingWeights
from recstream.core.attributes import AttributeCondition
from recstream.core.index import ItemPayload, ItemRecord, ScoredItem, SearchFilter, Vector

WEIGHTS = RankingWeights(0.6, 0.3, 0.1, 0.0)
POLICY = QueryConfig(
    weights=WEIGHTS,
    covis_per_seed=30,
    next_per_seed=100,
    max_per_category=0,
    serve_hidden_items=False,
    similar_reason_min_cosine=0.6,
    diversity=0.7,
    filter_attributes={},
)


def _vector(*values: float) -> Vector:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def _payload(item_id: str, category: str | None = "films", available: bool = True) -> ItemPayload:
    return ItemPayload(item_id, f"title {item_id}", category, (), available, "h", 0)


def _hit(item_id: str, vector: Vector, category: str | None = "films") -> ScoredItem:
    return ScoredItem(_payload(item_id, category), 0.0, vector)


def _record(item_id: str, vector: Vector, **payload: object) -> ItemRecord:
    return ItemRecord(_payload(item_id, **payload), vector)  # type: ignore[arg-type]


def _context(**changes: object) -> QueryContext:
    base = QueryContext(k=3, diversity=1.0, strategy="personalised", flt=SearchFilter())
    return QueryContext(**{name: getattr(base, name) for name in base.__slots__} | changes)  # type: ignore[arg-type]


def test_candidates_are_the_hits_then_the_covisited_items_that_pass_the_filter() -> None:
    anchors = (
        Anchor("seen1", "Alien", _vector(1, 0, 0)),
        Anchor("seen2", "Heat", _vector(0, 1, 0)),
    )
    context = _context(
        query=_vector(1, 1, 0),
        anchors=anchors,
        hits=(_hit("a", _vector(1, 0.1, 0)),),
        covisits={"seen1": {"b": 2.0, "hidden": 9.0}, "seen2": {"b": 3.0, "seen1": 5.0}},
        covisited_records={
            "b": _record("b", _vector(0.1, 1, 0)),
            "hidden": _record("hidden", _vector(1, 0, 0), available=False),
        },
        popularity={"a": 4.0, "b": 1.0},
    )
    found = {c.item_id: c for c in candidates(context, covis_seeds=5)}
    assert list(found) == ["a", "b"]  # the hidden one fails the filter; an anchor is no candidate
    assert found["b"].covisitation == 5.0 and found["b"].covisited_with == "Heat"
    assert found["a"].covisitation == 0.0 and found["a"].covisited_with is None
    assert (found["a"].similar_to, found["b"].similar_to) == ("Alien", "Heat")
    assert found["b"].similar_to_cosine == pytest.approx(float(_vector(0.1, 1, 0)[1]))
    assert (found["a"].popularity, found["b"].popularity) == (4.0, 1.0)
    assert found["a"].similarity == pytest.approx(float(_vector(1, 0.1, 0) @ _vector(1, 1, 0)))


def test_items_chosen_after_the_anchors_join_with_newer_anchors_counting_more() -> None:
    anchors = (
        Anchor("new", "Newest", _vector(1, 0, 0)),
        Anchor("old", "Older", _vector(0, 1, 0)),
    )
    context = _context(
        query=_vector(1, 1, 0),
        anchors=anchors,
        hits=(_hit("a", _vector(1, 0.1, 0)),),
        transitions={"new": {"a": 1.0, "x": 2.0}, "old": {"x": 2.0, "new": 7.0, "gone": 5.0}},
        covisited_records={
            "x": _record("x", _vector(0, 0, 1)),
            "gone": _record("gone", _vector(0, 0, 1), available=False),
        },
    )
    found = {c.item_id: c for c in candidates(context, covis_seeds=5)}
    assert list(found) == ["a", "x"]  # an anchor is no candidate; a hidden one fails the filter
    assert found["x"].next == pytest.approx(2.0 + NEXT_DECAY * 2.0)
    assert found["x"].follows == "Newest"  # 2.0 after the newest beats 1.4 after the older
    assert (found["a"].next, found["a"].follows) == (1.0, "Newest")


def test_only_the_first_covis_seeds_anchors_bring_covisited_items() -> None:
    anchors = (Anchor("s1", "One", _vector(1, 0)), Anchor("s2", "Two", _vector(0, 1)))
    context = _context(
        query=_vector(1, 1),
        anchors=anchors,
        covisits={"s1": {"x": 1.0}, "s2": {"y": 1.0}},
        covisited_records={"x": _record("x", _vector(1, 0)), "y": _record("y", _vector(0, 1))},
    )
    assert [c.item_id for c in candidates(context, covis_seeds=1)] == ["x"]


class _Collab:
    factor = _vector(1, 0)
    slot = 0

    def score(self, item_ids: Sequence[str]) -> dict[str, float]:
        return {item: 0.5 for item in item_ids if item != "b"}


def test_a_collaborative_view_scores_every_candidate_it_knows() -> None:
    context = _context(
        query=_vector(1, 0),
        hits=(_hit("a", _vector(1, 0)), _hit("b", _vector(0, 1))),
        collab=_Collab(),
    )
    assert {c.item_id: c.collab for c in candidates(context, 5)} == {"a": 0.5, "b": 0.0}


def test_decide_ranks_the_candidates_and_says_how_many_are_missing() -> None:
    context = _context(query=_vector(1, 0), hits=(_hit("a", _vector(1, 0)),))
    ranked, missing = decide(context, POLICY)
    assert [r.candidate.item_id for r in ranked] == ["a"]
    assert missing == 2
    popular = _context(strategy="popular")
    assert decide(popular, POLICY) == ([], 3)


def test_a_short_list_is_filled_with_the_most_popular_eligible_items() -> None:
    context = _context(
        query=_vector(1, 0),
        hits=(_hit("a", _vector(1, 0)),),
        flt=SearchFilter(exclude_item_ids=("excluded",)),
    )
    ranked, _ = decide(context, POLICY)
    filling = TopUp(
        pool={"excluded": 9.0, "a": 8.0, "hidden": 7.0, "p1": 4.0, "p2": 2.0, "p3": 1.0},
        records={
            "hidden": _record("hidden", _vector(0, 1), available=False),
            "p1": _record("p1", _vector(0, 1)),
            "p3": _record("p3", _vector(0, 1)),
            "p2": _record("p2", _vector(0, 1), category=None),
        },
    )
    filled = top_up(context, ranked, filling)
    assert [r.candidate.item_id for r in filled] == ["a", "p1", "p2"]
    assert [r.score for r in filled[1:]] == [4.0 / 9.0, 2.0 / 9.0]
    assert filled[1].reasons == ("popular in films",)
    assert filled[2].reasons == ("popular",)


def test_the_top_up_keeps_the_category_cap() -> None:
    context = _context(query=_vector(1, 0), hits=(_hit("a", _vector(1, 0)),), category_cap=1)
    ranked, _ = decide(context, POLICY)
    filling = TopUp(
        pool={"p1": 3.0, "p2": 2.0, "p3": 1.0},
        records={
            "p1": _record("p1", _vector(0, 1)),
            "p2": _record("p2", _vector(0, 1), category="books"),
            "p3": _record("p3", _vector(0, 1), category="music"),
        },
    )
    assert [r.candidate.item_id for r in top_up(context, ranked, filling)] == ["a", "p2", "p3"]


def test_too_few_popular_items_are_followed_by_any_eligible_ones() -> None:
    context = _context(strategy="popular")
    filling = TopUp(
        pool={"p1": 2.0},
        records={"p1": _record("p1", _vector(1, 0))},
        any_items=(_hit("p1", _vector(1, 0)), _hit("n1", _vector(0, 1)), _hit("n2", _vector(1, 1))),
    )
    filled = top_up(context, [], filling)
    assert [r.candidate.item_id for r in filled] == ["p1", "n1", "n2"]
    assert [r.score for r in filled] == [1.0, 0.0, 0.0]


def _described(item_id: str, year: int, tags: tuple[str, ...] = ("classic",)) -> ItemRecord:
    payload = replace(_payload(item_id), tags=tags, attributes={"year": year})
    return ItemRecord(payload, _vector(0, 1))


def test_covisited_and_popular_items_are_held_to_the_attribute_and_tag_filters() -> None:
    """They come from outside the filtered search: the filter is checked on their payloads."""
    flt = SearchFilter(tags_any=("classic",), attributes=(AttributeCondition("year", gte=2000),))
    context = _context(
        query=_vector(1, 0),
        anchors=(Anchor("seen", "Seen", _vector(1, 0)),),
        flt=flt,
        covisits={"seen": {"old": 5.0, "new": 1.0, "untagged": 9.0}},
        covisited_records={
            "old": _described("old", 1990),
            "new": _described("new", 2005),
            "untagged": _described("untagged", 2005, tags=()),
        },
    )
    ranked, _ = decide(context, POLICY)
    assert [r.candidate.item_id for r in ranked] == ["new"]
    filling = TopUp(
        pool={"p-old": 9.0, "p-new": 1.0},
        records={"p-old": _described("p-old", 1999), "p-new": _described("p-new", 2000)},
    )
    filled = top_up(context, ranked, filling)
    assert [r.candidate.item_id for r in filled] == ["new", "p-new"]


def test_a_full_list_is_left_as_it_is() -> None:
    context = _context(k=1, query=_vector(1, 0), hits=(_hit("a", _vector(1, 0)),))
    ranked, missing = decide(context, POLICY)
    assert missing == 0
    assert top_up(context, ranked, TopUp({"p": 1.0}, {"p": _record("p", _vector(0, 1))})) == ranked
