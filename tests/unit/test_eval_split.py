"""Splits never leak test events into training."""

from __future__ import annotations

import random

import pytest

from recstream.core.errors import RecstreamError
from recstream.evaluation.split import global_cutoff, last_fraction
from recstream.schemas.events import InteractionEvent

TYPES = ["view", "click", "like", "dislike", "purchase", "skip"]


def _events(seed: int = 2) -> list[InteractionEvent]:
    rng = random.Random(seed)
    events = [
        InteractionEvent(
            f"e{n}",
            f"u{rng.randrange(12)}",
            f"i{rng.randrange(30)}",
            rng.choice(TYPES),
            1_000_000 + rng.randrange(500) * 1000,  # many equal times
        )
        for n in range(600)
    ]
    events.sort(key=lambda e: e.event_time)
    return events


def test_last_fraction_holds_out_each_users_latest_events_only() -> None:
    events = _events()
    split = last_fraction(events, 0.25)
    train_ids = {e.event_id for e in split.train}
    held = [e for e in events if e.event_id not in train_ids]
    assert len(train_ids) + len(held) == len(events)
    for user in {e.user_id for e in events}:
        mine = [e for e in events if e.user_id == user]
        taken = [e for e in held if e.user_id == user]
        assert len(taken) == max(1, int(0.25 * len(mine)))
        assert taken == mine[-len(taken) :]  # the user's last events, in order
        assert all((user, e.item_id) in split.held_out for e in taken)
    # relevant: held-out positives only, never a training-only pair
    for user, items in split.relevant.items():
        for item in items:
            assert any(
                e.user_id == user
                and e.item_id == item
                and e.event_type in ("click", "like", "purchase")
                for e in held
            )
    assert [e.event_time for e in split.train] == sorted(e.event_time for e in split.train)


def test_global_cutoff_trains_strictly_before_the_cutoff() -> None:
    events = _events()
    split = global_cutoff(events, 0.7)
    assert split.cutoff_ms is not None
    assert all(e.event_time < split.cutoff_ms for e in split.train)
    later = [e for e in events if e.event_time >= split.cutoff_ms]
    assert len(split.train) + len(later) == len(events)
    assert not split.visible("u1", "i1", split.cutoff_ms)  # side data from the test period
    assert split.history == {
        u: sum(e.user_id == u for e in split.train) for u in {e.user_id for e in split.train}
    }


def test_bad_split_parameters_are_refused() -> None:
    with pytest.raises(RecstreamError, match="holdout fraction"):
        last_fraction(_events(), 1.5)
    with pytest.raises(RecstreamError, match="no training events"):
        global_cutoff(_events()[:1], 0.5)
