"""The sequential baseline (GRU4Rec): its training windows by hand, and that it learns an order
that item-to-item co-occurrence cannot see."""

from __future__ import annotations

import pytest

from recstream.core.settings import DEFAULT_EVENT_WEIGHTS
from recstream.evaluation.baselines import Interactions, ItemKNN
from recstream.evaluation.sequential import Gru4Rec, GruParams, sequences, windows
from recstream.schemas.events import InteractionEvent

pytestmark = pytest.mark.unit


def test_windows_cover_the_history_once_ending_at_the_newest_item() -> None:
    assert windows([1, 2, 3, 4, 5, 6, 7], length=3) == [[4, 5, 6, 7], [1, 2, 3, 4]]
    assert windows([1, 2, 3], length=3) == [[1, 2, 3]]
    assert windows([1], length=3) == []


def test_sequences_are_in_event_time_order_and_skip_items_outside_the_catalog() -> None:
    events = [
        InteractionEvent("e2", "u", "b", "click", 20),
        InteractionEvent("e1", "u", "a", "click", 10),
        InteractionEvent("e3", "u", "gone", "click", 30),
    ]
    assert sequences(events, {"a": 0, "b": 1}) == {"u": [1, 2]}


def test_the_gru_learns_what_comes_next_where_co_occurrence_sees_no_order() -> None:
    """Every user walks the same cycle c -> a -> e -> b -> d -> c ... from some start, so a user
    whose last item is b is next at d. Every user has every item: co-occurrence ties them all."""
    cycle = ["c", "a", "e", "b", "d"]
    events = []
    for user in range(40):
        for step in range(12):
            item = cycle[(user + step) % len(cycle)]
            events.append(InteractionEvent(f"{user}-{step}", f"u{user}", item, "click", step))
    probe = [InteractionEvent(f"p{n}", "probe", item, "click", n) for n, item in enumerate("aeb")]
    events += probe
    data = Interactions.build(events, [*cycle, "f", "g"], DEFAULT_EVENT_WEIGHTS)
    model = Gru4Rec(data, events, GruParams(size=16, learning_rate=0.02, dropout=0.0))
    assert list(model.train([30])) == [30]
    assert model.recommend("probe", 1) == ["d"]
    assert ItemKNN(data).recommend("probe", 2) == ["c", "d"]  # a tie, broken by item id
