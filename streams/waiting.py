"""Interactions that arrive before their item's vector wait for it, instead of being applied
without it (docs/ingest.md, "Events before their item").

An event whose item has no vector yet is held, and so is every later event of its user (a user's
events are applied in order), until the vector arrives or the wait is over; then they are
applied as if they had come after the item. Held records are fed back into each batch until
then, and the interactions consumer never commits past the oldest held record of a partition,
so a crash loses none of them (a replay is deduplicated by the users' event-id guards). The room
is bounded: past `capacity` held events, or `max_wait_s` for one, events are applied without the
vector, counted as expired.

`WaitingRoom.split` decides; `commit` takes a decision in once the batch it belongs to is stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from recstream.infra.messages import Record
from recstream.schemas.events import InteractionEvent

Source = tuple[str, int, int]  # topic, partition, offset
Partition = tuple[str, int]


def source_of(record: Record) -> Source:
    return record.topic, record.partition, record.offset


@dataclass(frozen=True, slots=True)
class _Held:
    record: Record
    user_id: str
    since: float  # monotonic time it started waiting


@dataclass
class WaitingUpdate:
    """One batch's decisions: records that (still) wait, since when; held records applied now."""

    waiting: dict[Source, _Held] = field(default_factory=dict)
    applied: set[Source] = field(default_factory=set)
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


class WaitingRoom:
    def __init__(
        self, max_wait_s: float, capacity: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_wait_s = max_wait_s
        self._capacity = capacity
        self._clock = clock
        self._held: dict[Source, _Held] = {}

    def __len__(self) -> int:
        return len(self._held)

    def records(self) -> list[Record]:
        """The held records to feed into the next batch, in log order."""
        return [self._held[s].record for s in sorted(self._held)]

    def split(
        self,
        pairs: Sequence[tuple[InteractionEvent, Record]],
        has_vector: Callable[[str], bool],
    ) -> tuple[list[InteractionEvent], WaitingUpdate]:
        """The events to apply now, in order, and what waits."""
        update = WaitingUpdate()
        if not self._held and all(has_vector(event.item_id) for event, _ in pairs):
            return [event for event, _ in pairs], update
        now = self._clock()
        room = self._capacity - len(self._held)
        # A user whose held events are not in this batch (a part of a batch being isolated) has
        # all of this batch's events held behind them.
        here = {source_of(record) for _, record in pairs}
        blocked = {held.user_id for s, held in self._held.items() if s not in here}
        ready = []
        for event, record in pairs:
            source = source_of(record)
            held = self._held.get(source)
            since = None if held is None else held.since
            waits = event.user_id in blocked or not has_vector(event.item_id)
            if waits and event.user_id not in blocked and self._gives_up(since, now, room):
                waits = False
                update.count("expired")
            if waits:
                blocked.add(event.user_id)
                update.waiting[source] = _Held(
                    record, event.user_id, now if since is None else since
                )
                if since is None:
                    room -= 1
                    update.count("deferred")
                continue
            ready.append(event)
            if since is not None:
                update.applied.add(source)
                if has_vector(event.item_id):
                    update.count("released")
        return ready, update

    def _gives_up(self, since: float | None, now: float, room: int) -> bool:
        """The first waiting event of a user stops waiting: its time is up, or (a new one) the
        room is full."""
        if since is None:
            return room <= 0
        return now - since >= self._max_wait_s

    def commit(self, update: WaitingUpdate) -> None:
        for source in update.applied:
            self._held.pop(source, None)
        self._held.update(update.waiting)

    def barrier(self) -> dict[Partition, int]:
        """Per partition, the oldest held offset: nothing at or past it may be committed."""
        oldest: dict[Partition, int] = {}
        for topic, partition, offset in self._held:
            key = (topic, partition)
            oldest[key] = min(offset, oldest.get(key, offset))
        return oldest

    def drop(self, partitions: Collection[Partition]) -> None:
        """Forget the held records of partitions this process no longer owns (their new owner
        reads them again from the committed offset)."""
        gone = set(partitions)
        self._held = {s: held for s, held in self._held.items() if s[:2] not in gone}
