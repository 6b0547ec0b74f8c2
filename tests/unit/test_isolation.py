"""PoisonIsolation: retries, then the records that fail a batch are found and dead-lettered."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from recstream.streams.isolation import PoisonIsolation, RetryPolicy, Stopped

NO_WAIT = RetryPolicy(max_attempts=3, first_delay_s=0.0, max_delay_s=0.0)


class OutageError(Exception):
    pass


class Store:
    """Applies batches unless they hold a poisoned record (then nothing of them)."""

    def __init__(self, poison: set[int], outages: int = 0) -> None:
        self.poison = poison
        self.outages = outages
        self.applied: list[int] = []
        self.calls = 0

    def apply(self, records: Sequence[int]) -> None:
        self.calls += 1
        if self.outages:
            self.outages -= 1
            raise OutageError("store away")
        bad = self.poison.intersection(records)
        if bad:
            raise ValueError(f"cannot apply {sorted(bad)}")
        self.applied += records


def _isolation(
    store: Store, stopping: threading.Event | None = None
) -> tuple[PoisonIsolation[int], list[tuple[int, str]]]:
    dead: list[tuple[int, str]] = []
    isolation = PoisonIsolation(
        store.apply,
        lambda record, error: dead.append((record, str(error))),
        lambda error: isinstance(error, OutageError),
        stopping or threading.Event(),
        NO_WAIT,
    )
    return isolation, dead


def test_poisoned_records_are_dead_lettered_and_the_rest_applied_in_order() -> None:
    store = Store(poison={3, 11})
    isolation, dead = _isolation(store)
    isolation.apply(list(range(16)))
    assert store.applied == [r for r in range(16) if r not in (3, 11)]
    assert dead == [(3, "cannot apply [3]"), (11, "cannot apply [11]")]
    # 3 tries of the whole batch, then about two tries per level of the halving
    assert store.calls <= 3 + 2 * 2 * 4


def test_an_outage_is_retried_without_isolating_anything() -> None:
    store = Store(poison=set(), outages=10)  # more outages than max_attempts
    isolation, dead = _isolation(store)
    isolation.apply([1, 2, 3])
    assert (store.applied, dead, store.calls) == ([1, 2, 3], [], 11)


def test_a_batch_that_succeeds_on_a_retry_is_not_split() -> None:
    store = Store(poison=set())
    failures = iter([ValueError("once")])

    def flaky(records: Sequence[int]) -> None:
        error = next(failures, None)
        if error is not None:
            raise error
        store.apply(records)

    dead: list[tuple[int, str]] = []
    isolation = PoisonIsolation(
        flaky, lambda r, e: dead.append((r, str(e))), lambda e: False, threading.Event(), NO_WAIT
    )
    isolation.apply([1, 2])
    assert (store.applied, dead) == ([1, 2], [])


def test_stopping_while_retrying_raises_stopped_and_applies_nothing() -> None:
    stopping = threading.Event()
    stopping.set()
    store = Store(poison=set(), outages=1)
    isolation, dead = _isolation(store, stopping)
    with pytest.raises(Stopped):
        isolation.apply([1])
    assert (store.applied, dead) == ([], [])


class CatalogLike:
    """What catalog_batches needs of the catalog processor: process, dead_letter, flush."""

    def __init__(self, poison: set[int]) -> None:
        self.store = Store(poison)
        self.dead: list[tuple[int, str]] = []
        self.flushed = 0

    def process(self, records: Sequence[int]) -> None:
        self.store.apply(records)

    def dead_letter(self, record: int, error: Exception) -> None:
        self.dead.append((record, str(error)))

    def flush_dead_letters(self) -> None:
        self.flushed += 1


def test_catalog_batches_dead_letter_the_failing_records_and_flush_before_returning() -> None:
    from recstream.compose import catalog_batches

    processor = CatalogLike(poison={2})
    apply = catalog_batches(processor, threading.Event(), NO_WAIT)  # type: ignore[arg-type]
    apply([1, 2, 3])  # type: ignore[list-item]
    assert processor.store.applied == [1, 3]
    assert processor.dead == [(2, "processing_failed: ValueError: cannot apply [2]")]
    assert processor.flushed == 1
