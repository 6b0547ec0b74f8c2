"""Events that arrive before their item's vector wait for it (the pure decisions)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from recstream.schemas.events import InteractionEvent
from recstream.streams.waiting import WaitingRoom

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class _Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _pairs(*spec: tuple[str, str, int]) -> list[tuple[InteractionEvent, _Record]]:
    """(user, item, offset) each; every user on partition 0."""
    return [
        (
            InteractionEvent(f"e{offset}", user, item, "click", 1000 + offset),
            _Record("t", 0, offset),
        )
        for user, item, offset in spec
    ]


def _ids(events: list[InteractionEvent]) -> list[str]:
    return [e.event_id for e in events]


def test_everything_passes_at_once_when_every_item_has_a_vector() -> None:
    room = WaitingRoom(60, 100)
    ready, update = room.split(_pairs(("u", "a", 1), ("v", "b", 2)), lambda item: True)
    assert _ids(ready) == ["e1", "e2"]
    assert not update.waiting and not update.outcomes


def test_an_event_without_its_vector_holds_its_users_later_events_in_order() -> None:
    room = WaitingRoom(60, 100)
    known = {"a", "b"}
    pairs = _pairs(("u", "a", 1), ("u", "new", 2), ("u", "b", 3), ("v", "b", 4))
    ready, update = room.split(pairs, known.__contains__)
    assert _ids(ready) == ["e1", "e4"]  # another user's events are not held up
    assert sorted(update.waiting) == [("t", 0, 2), ("t", 0, 3)]
    assert update.outcomes == {"deferred": 2}
    assert room.barrier() == {}  # nothing is held before the batch is stored
    room.commit(update)
    assert room.barrier() == {("t", 0): 2}
    assert [r.offset for r in room.records()] == [2, 3]

    # Fed back with the next batch before the vector came: still waiting, new events behind.
    again, update = room.split(
        _pairs(("u", "new", 2), ("u", "b", 3), ("u", "a", 5)), known.__contains__
    )
    assert again == [] and sorted(update.waiting) == [("t", 0, 2), ("t", 0, 3), ("t", 0, 5)]
    assert update.outcomes == {"deferred": 1}  # only e5 is new
    room.commit(update)

    # The vector came: all three go, in their order.
    known.add("new")
    pairs = _pairs(("u", "new", 2), ("u", "b", 3), ("u", "a", 5))
    released, update = room.split(pairs, known.__contains__)
    assert _ids(released) == ["e2", "e3", "e5"]
    assert update.outcomes == {"released": 3}
    room.commit(update)
    assert len(room) == 0 and room.barrier() == {}


def test_a_wait_is_bounded_in_time_and_in_events() -> None:
    clock = _Clock()
    room = WaitingRoom(max_wait_s=10, capacity=2, clock=clock)
    _, update = room.split(_pairs(("u", "x", 1), ("u", "a", 2), ("v", "y", 3)), lambda i: i == "a")
    assert update.outcomes == {"deferred": 2, "expired": 1}  # the room held two: v went on
    room.commit(update)
    clock.now = 10.0
    pairs = _pairs(("u", "x", 1), ("u", "a", 2))
    ready, update = room.split(pairs, lambda i: i == "a")
    assert _ids(ready) == ["e1", "e2"]  # x never came: applied without it, e2 after it
    assert update.outcomes == {"expired": 1, "released": 1}
    room.commit(update)
    assert len(room) == 0


def test_a_revoked_partitions_held_records_are_forgotten() -> None:
    room = WaitingRoom(60, 100)
    elsewhere = (InteractionEvent("e9", "w", "x", "click", 1), _Record("t", 3, 9))
    pairs = [*_pairs(("u", "x", 1)), elsewhere]
    _, update = room.split(pairs, lambda item: False)
    room.commit(update)
    assert room.barrier() == {("t", 0): 1, ("t", 3): 9}
    room.drop([("t", 3)])
    assert room.barrier() == {("t", 0): 1}


def test_a_users_events_wait_behind_its_held_ones_that_are_not_in_the_batch() -> None:
    room = WaitingRoom(60, 100)
    _, update = room.split(_pairs(("u", "x", 1)), lambda item: False)
    room.commit(update)
    # The held record is not in this batch (another half of a batch being isolated): u's new
    # event (its item known) must still not overtake it.
    ready, update = room.split(_pairs(("u", "a", 2), ("v", "a", 3)), lambda item: item == "a")
    assert _ids(ready) == ["e3"]
    assert sorted(update.waiting) == [("t", 0, 2)]
