"""Interaction processor, the hot path: batches of interaction events become session vectors,
seen history, popularity and co-visitation in Redis.

It consumes with confluent-kafka in batches (faust's per-event path tops out near 12k events/s
here), applies the whole batch with numpy (`streams.session.apply_batch`), writes it in one Redis
transaction and commits offsets only after that. It runs in its own thread inside the worker
process, so the faust event loop (catalog agent, query worker) never waits on it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from recstream.core.index import ItemStore, Vector
from recstream.core.ports import SessionWriter
from recstream.core.pressure import QueryPressure
from recstream.core.progress import RoleProgress
from recstream.core.state import BatchEffects, UserState
from recstream.infra.clients import is_outage
from recstream.infra.dlq import DeadLetterWriter
from recstream.infra.messages import KafkaRecord, Record, poll_available, raise_if_fatal
from recstream.infra.metrics import BATCH_RETRIES, PROCESSING_LAG, RECORDS_ISOLATED
from recstream.infra.stores.collab_store import CollabReader
from recstream.schemas.errors import InvalidMessageError
from recstream.schemas.events import EventDecoder, InteractionEvent
from recstream.streams.interaction_metrics import (
    COLLAB_FOLD_IN_SECONDS,
    INTERACTION_BATCH_EVENTS,
    INTERACTION_BATCH_SECONDS,
    INTERACTION_EVENTS,
    INTERACTION_VECTOR_MISSING,
    INTERACTION_WAITING,
    INTERACTION_WAITING_EVENTS,
)
from recstream.streams.isolation import PoisonIsolation, RetryPolicy, Stopped
from recstream.streams.session import SessionConfig, apply_batch, popularity_landmark, user_groups
from recstream.streams.waiting import Partition, WaitingRoom, WaitingUpdate

log = logging.getLogger(__name__)
_T = TypeVar("_T")


def as_item_precision(vector: Vector) -> Vector:
    """Item vectors at the precision an interactions-only process keeps them (float16,
    recstream.infra.stores.item_vectors), whatever store this one reads: a user's state is
    the same whichever processes the roles run in."""
    return vector.astype(np.float16).astype(np.float32)


MISSING_ITEM_RETRY_S = 1.0  # how long an item found without a vector is not looked up again
# While requests are in hand: wait for them at most this long per batch (so ingest never stops),
# then take a batch short enough (tens of ms of Python) not to hold the next request up long.
YIELD_WAIT_S = 0.2
YIELDING_BATCH = 500
QUERY_QUIET_S = 1.0  # no answer for this long: requests have stopped, full batches again
DECODE_SLICE = 500  # messages decoded at once (`EventDecoder.interactions`)


class _LRU(OrderedDict[str, Any]):
    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def lookup(self, key: str) -> Any:
        """The value (now most recently used), or None."""
        if key not in self:
            return None
        self.move_to_end(key)
        return self[key]

    def put(self, key: str, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A batch applied in memory and not yet stored: one effects per write chunk (whole users,
    `user_groups`), each stored atomically on its own."""

    chunks: list[BatchEffects]
    previous_landmark: int | None
    decoded: int
    started: float
    waiting: WaitingUpdate = field(default_factory=WaitingUpdate)


@dataclass(frozen=True, slots=True)
class _ItemInfo:
    vector: Vector
    category: str | None


class InteractionProcessor:
    """Applies batches of raw interaction messages. Bad messages are dead-lettered, never raised.

    Caches: item vectors (bounded LRU over the vector index, the one source of truth) and user
    states (this process is the only writer of its partitions' users; `forget_users` drops the
    cache when partitions move, and any failed write drops it too).
    """

    def __init__(
        self,
        config: SessionConfig,
        index: ItemStore,
        store: SessionWriter,
        dead_letters: DeadLetterWriter,
        decoder: EventDecoder | None = None,
        *,
        item_cache_size: int,
        write_chunk_events: int,
        late_log_per_minute: int,
        user_cache_size: int = 100_000,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        collab: CollabReader | None = None,
        pressure: QueryPressure | None = None,
        waiting: WaitingRoom | None = None,
    ) -> None:
        self._config = config
        self.waiting = waiting if waiting is not None else WaitingRoom(0.0, capacity=0)
        self._late = LateEventsLog(late_log_per_minute)
        self._write_chunk_events = write_chunk_events
        self._pressure = pressure
        self._index = index
        self._store = store
        self._dead_letters = dead_letters
        self._decoder = decoder or EventDecoder()
        self._items = _LRU(item_cache_size)
        self._missing_until: dict[str, float] = {}
        self._users = _LRU(user_cache_size)
        self._pinned: dict[str, UserState] = {}
        self._landmark: int | None = None
        self._landmark_loaded = False
        self._clock_ms = clock_ms
        self._collab = collab

    def forget_users(self) -> None:
        """Drop cached user states and the popularity landmark (reloaded from Redis on next use)."""
        self._users.clear()
        self._pinned = {}
        self._landmark_loaded = False

    def dead_letter(self, record: Record, error: InvalidMessageError) -> None:
        """Dead-letter one record (one isolated as failing its batch); `flush_dead_letters`
        waits for it."""
        self._dead_letters.dead_letter(record, error)

    def flush_dead_letters(self) -> None:
        self._dead_letters.flush()

    def process(self, messages: Sequence[Record]) -> list[BatchEffects]:
        """Decode, apply and store one batch (its effects per write chunk); raises only when the
        store or index fails."""
        batch = self.prepare(messages)
        try:
            self.store(batch)
        except Exception:
            self.forget_users()  # the stored state is unknown now: reload it next time
            raise
        return batch.chunks

    def prepare(self, messages: Sequence[Record]) -> PreparedBatch:
        """Decode and apply one batch in memory, ready for `store`. The next batch may be
        prepared before this one is stored: its users' new states are served from memory.
        Events whose item has no vector yet wait (streams/waiting.py)."""
        started = time.perf_counter()
        decoded = self._decode(messages)
        try:
            items = self._item_infos({event.item_id for event, _ in decoded})
            events, waiting = self.waiting.split(decoded, items.__contains__)
            chunks, previous_landmark = self._apply(events, items)
            self._dead_letters.flush()
        except Exception:
            self.forget_users()  # the stored state is unknown now: reload it next time
            raise
        # Pinned until the next batch is prepared (by then this one is stored): an LRU eviction
        # must never send a user of a batch in flight back to Redis for an older state.
        self._pinned = {}
        for effects in chunks:
            for user, state in effects.states.items():
                self._users.put(user, state)
            self._pinned |= effects.states
        return PreparedBatch(chunks, previous_landmark, len(events), started, waiting)

    def store(self, batch: PreparedBatch) -> None:
        """Write a prepared batch, one atomic script call per chunk, in the order batches were
        prepared. Every effect of an event (its user's state, guards and seen history, and the
        counters it raised) is in its user's chunk, so a chunk stored is a set of events applied
        exactly once, and a replay skips them by their guards. Between chunks Redis serves other
        clients: a script blocks it while it runs. After a failure the caller must
        `forget_users` and apply the batch again (batches prepared after it were built on it:
        they are void)."""
        previous = batch.previous_landmark
        for effects in batch.chunks:
            self._step_back()
            self._store.write_batch(effects, previous)
            previous = effects.landmark  # the first chunk moved it (rebasing the counters)
        self.waiting.commit(batch.waiting)
        self._observe(batch.chunks, batch.decoded, time.perf_counter() - batch.started)
        for outcome, count in batch.waiting.outcomes.items():
            INTERACTION_WAITING.labels(outcome).inc(count)
        INTERACTION_WAITING_EVENTS.set(len(self.waiting))

    def _decode(self, messages: Sequence[Record]) -> list[tuple[InteractionEvent, Record]]:
        """The events with their records, a slice at a time: at once where the whole slice is
        plainly valid, else one by one, dead-lettering each refused message with its reason.
        (Slices, so that one bad message sends only its slice down the slower path.)"""
        now = self._clock_ms()
        decoded: list[tuple[InteractionEvent, Record]] = []
        for start in range(0, len(messages), DECODE_SLICE):
            part = messages[start : start + DECODE_SLICE]
            events = self._decoder.interactions([m.value for m in part], now)
            if events is not None:
                decoded += zip(events, part, strict=True)
                continue
            for message in part:
                try:
                    decoded.append((self._decoder.interaction(message.value, now), message))
                except InvalidMessageError as error:
                    self._dead_letters.dead_letter(message, error)
                    INTERACTION_EVENTS.labels("dead_lettered").inc()
        return decoded

    def _apply(
        self, events: list[InteractionEvent], items: Mapping[str, _ItemInfo]
    ) -> tuple[list[BatchEffects], int | None]:
        """The batch's effects, one per write chunk, and the landmark the store holds before
        them."""
        if not events:
            return [], self._landmark
        states = self._user_states({e.user_id for e in events})
        if not self._landmark_loaded:
            self._landmark, self._landmark_loaded = self._store.popularity_landmark(), True
        newest = max(e.event_time for e in events)
        landmark = popularity_landmark(self._landmark, newest, self._config.landmark_half_life_ms)
        vectors = {i: info.vector for i, info in items.items()}
        categories = {i: info.category for i, info in items.items() if info.category}
        collab = self._collab.current() if self._collab else None
        chunks = []
        for group in user_groups(events, self._write_chunk_events):
            self._step_back()
            chunks.append(
                apply_batch(
                    group,
                    states,
                    vectors,
                    categories,
                    self._config,
                    self._index.collection,
                    self._index.dimension,
                    landmark,
                    collab,
                )
            )
        previous, self._landmark = self._landmark, landmark
        return chunks, previous

    def _step_back(self) -> None:
        """Between chunks, applied or written: let this process's requests in hand go first
        (a full batch is about a second of work; recstream/core/pressure.py)."""
        if self._pressure is not None:
            self._pressure.wait_idle(YIELD_WAIT_S)

    def _user_states(self, users: set[str]) -> dict[str, UserState]:
        states = {
            u: state
            for u in users
            if (state := self._pinned.get(u) or self._users.lookup(u)) is not None
        }
        states.update(self._store.load_states(users - states.keys()))
        return states

    def _item_infos(self, item_ids: set[str]) -> dict[str, _ItemInfo]:
        now = time.monotonic()
        found = {i: info for i in item_ids if (info := self._items.lookup(i)) is not None}
        wanted = [i for i in item_ids - found.keys() if self._missing_until.get(i, 0.0) <= now]
        for item_id, record in self._index.retrieve(wanted, with_vectors=True).items():
            if record.vector is not None:  # hidden items keep a meaningful vector
                info = _ItemInfo(as_item_precision(record.vector), record.payload.category)
                self._items.put(item_id, info)
                found[item_id] = info
        for item_id in wanted:
            if item_id not in found:
                self._missing_until[item_id] = now + MISSING_ITEM_RETRY_S
        if len(self._missing_until) > 100_000:
            self._missing_until = {k: t for k, t in self._missing_until.items() if t > now}
        return found

    def _observe(self, chunks: list[BatchEffects], decoded: int, seconds: float) -> None:
        for effects in chunks:
            for outcome, count in effects.outcomes.items():
                INTERACTION_EVENTS.labels(outcome).inc(count)
            self._late.add(effects.outcomes)
            INTERACTION_VECTOR_MISSING.inc(effects.vector_missing)
        INTERACTION_BATCH_SECONDS.observe(seconds)
        INTERACTION_BATCH_EVENTS.observe(decoded)
        fold_in_seconds = sum(effects.fold_in_seconds for effects in chunks)
        if fold_in_seconds:
            COLLAB_FOLD_IN_SECONDS.observe(fold_in_seconds)
        newest = max((effects.newest_time for effects in chunks), default=0)
        if newest:
            lag = max(0.0, (self._clock_ms() - newest) / 1000)
            PROCESSING_LAG.labels("interactions").set(lag)


class LateEventsLog:
    """Events refused as too late are counted (metrics, by reason); when more than
    `per_minute` arrive within a minute, one warning says how many and what to change."""

    REASONS = ("too_late", "too_late_guard_cap")

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_minute = per_minute
        self._clock = clock
        self._since = clock()
        self._counts: dict[str, int] = dict.fromkeys(self.REASONS, 0)
        self._warned = False

    def add(self, outcomes: Mapping[str, int]) -> None:
        now = self._clock()
        if now - self._since >= 60:
            self._since, self._warned = now, False
            self._counts = dict.fromkeys(self.REASONS, 0)
        for reason in self.REASONS:
            self._counts[reason] += outcomes.get(reason, 0)
        if not self._warned and sum(self._counts.values()) > self._per_minute:
            self._warned = True
            log.warning(
                "%d events dropped as too late within a minute (%d beyond the allowed lateness, "
                "%d below the guard-id cap): their producers lag behind; a longer "
                "RECSTREAM_ALLOWED_LATENESS_MS accepts them (docs/reliability.md)",
                sum(self._counts.values()),
                self._counts["too_late"],
                self._counts["too_late_guard_cap"],
            )


@dataclass(slots=True)
class _InFlight:
    raws: list[Record]
    written: Future[None]


class InteractionConsumer:
    """The Kafka side: consume a batch, apply it, write it, commit it. The write of one batch (a
    Redis script call) overlaps the consuming and applying of the next; offsets are committed
    only once the write is done. A failed batch is applied again from its records, which are
    kept until committed, and never committed past: an outage is retried until the store
    answers, a batch that fails by itself has the records that fail it isolated and
    dead-lettered (streams/isolation.py). A failed commit is retried with the next one."""

    def __init__(
        self,
        processor: InteractionProcessor,
        consumer_config: dict[str, Any],
        topic: str,
        *,
        batch_size: int,
        batch_timeout_s: float,
        pressure: QueryPressure | None = None,
        retry: RetryPolicy | None = None,
        progress: RoleProgress | None = None,
    ) -> None:
        self._processor = processor
        self._pressure = pressure
        self._topic = topic
        self._batch_size = batch_size
        self._batch_timeout_s = batch_timeout_s
        self.progress = progress or RoleProgress("interactions")
        self._consumer = Consumer(
            consumer_config
            | {
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                "fetch.min.bytes": 1,
                "queued.max.messages.kbytes": 65536,
            }
        )
        self._consumer.subscribe(
            [topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="interaction-writer")
        self._pending: _InFlight | None = None
        self._consumed: dict[Partition, int] = {}  # next offset per owned partition, stored
        self._uncommitted_records = 0
        self._committed = 0  # records committed since run_once last reported
        self._stop = threading.Event()
        self._isolation = PoisonIsolation(
            processor.process, self._poisoned, is_outage, self._stop, retry, self._retrying
        )

    def _on_assign(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            self._finish_pending()
            self._processor.forget_users()

    def _on_revoke(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            # Settle the batch in flight first: a reload from Redis must see its write.
            self._finish_pending()
            self._processor.forget_users()
            gone = [(part.topic, part.partition) for part in partitions]
            self._processor.waiting.drop(gone)  # their new owner reads them again
            for key in gone:  # and commits them now
                self._consumed.pop(key, None)

    def run_once(self) -> int:
        """Consume and apply one batch and start writing it; wait for the previous batch's write
        and commit it. The number of records committed (0 while the first batch is written)."""
        self.progress.beat()
        messages = poll_available(self._consumer, self._batch_limit(), self._batch_timeout_s)
        raws = self._waiting_records() + [KafkaRecord(m) for m in messages if _is_record(m)]
        if raws:
            self.progress.holding(id(raws))
        prepared = self._attempt(lambda: self._processor.prepare(raws)) if raws else None
        if self._finish_pending():  # re-applied after a failed write: `prepared` is void
            prepared = None
        if raws and prepared is None:
            self._apply_again(raws)
            self._commit(raws)
        elif prepared is not None:
            self._pending = _InFlight(raws, self._writer.submit(self._processor.store, prepared))
        committed, self._committed = self._committed, 0
        return committed

    def _waiting_records(self) -> list[Record]:
        """Held records, fed into every batch until their item's vector has come: all of them
        each time (a user's held events are decided together), so none may be in flight."""
        if not len(self._processor.waiting):
            return []
        self._finish_pending()
        return self._processor.waiting.records()

    def _batch_limit(self) -> int:
        """The batch size; while this process's query worker is answering requests, a short
        wait for those in hand and a small batch (recstream/core/pressure.py)."""
        if self._pressure is None or not self._pressure.active_within(QUERY_QUIET_S):
            return self._batch_size
        self._pressure.wait_idle(YIELD_WAIT_S)
        return min(self._batch_size, YIELDING_BATCH)

    def _finish_pending(self) -> bool:
        """Wait for the batch in flight and commit it; True if its write had failed and it was
        applied again synchronously."""
        pending, self._pending = self._pending, None
        if pending is None:
            return False
        error = pending.written.exception()  # waits for the write
        if error is not None:
            log.error("interaction batch write failed; applying it again", exc_info=error)
            self._retrying(error)
            self._apply_again(pending.raws)
        self._commit(pending.raws)
        return error is not None

    def _apply_again(self, raws: list[Record]) -> None:
        """Apply and store a batch synchronously: stored, or its failing records dead-lettered
        (retried meanwhile as long as the failure is an outage)."""
        self._isolation.apply(raws)
        self._isolation.run(self._processor.flush_dead_letters, "dead-letter delivery")

    def _retrying(self, error: BaseException) -> None:
        """Before a batch is applied again: what is cached may not be what is stored."""
        self._processor.forget_users()
        BATCH_RETRIES.labels("interactions", type(error).__name__).inc()

    def _poisoned(self, record: Record, error: BaseException) -> None:
        RECORDS_ISOLATED.labels("interactions").inc()
        INTERACTION_EVENTS.labels("dead_lettered").inc()
        self._processor.dead_letter(record, processing_failed(error))

    def _commit(self, raws: list[Record]) -> None:
        """Commit what is stored: per partition, past the batch's records but never past one
        still waiting for its item (a failed commit is retried with the next one: the state is
        stored, so the users' cached states stay valid)."""
        self.progress.released(id(raws))
        before = dict(self._consumed)
        for raw in raws:
            key = (raw.topic, raw.partition)
            self._consumed[key] = max(self._consumed.get(key, -1), raw.offset + 1)
            self._uncommitted_records += raw.offset >= before.get(key, -1)  # not fed again
        barrier = self._processor.waiting.barrier()
        offsets = {key: min(o, barrier.get(key, o)) for key, o in self._consumed.items()}
        try:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False,
            )
        except KafkaException as error:
            raise_if_fatal(error.args[0])
            # A replay of what is not committed is a no-op for the event-id guards.
            log.warning("commit failed, will be retried with the next one: %s", error)
            self.progress.commit_failed()
            return
        self.progress.committed()
        self._committed += self._uncommitted_records
        self._uncommitted_records = 0

    @staticmethod
    def _attempt(step: Callable[[], _T]) -> _T | None:
        """Run a step (which never returns None) once; None (logged) if it raised."""
        try:
            return step()
        except Exception:
            log.exception("interaction batch failed")
            return None

    def run(self) -> None:
        """Loop until `stop` is called, then close the consumer (leaving the group cleanly)."""
        try:
            while not self._stop.is_set():
                self.run_once()
        except Stopped:
            pass
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Store and commit the batch in flight, leave the group, release the consumer."""
        with contextlib.suppress(Stopped):
            self._finish_pending()
        self._writer.shutdown(wait=True)
        self._consumer.close()


def processing_failed(error: BaseException) -> InvalidMessageError:
    """The dead-letter reason of a record isolated as the one that fails its batch."""
    return InvalidMessageError("processing_failed", f"{type(error).__name__}: {error}")


def _is_record(message: Message) -> bool:
    error = message.error()
    if error is None:
        return True
    raise_if_fatal(error)
    if error.code() != KafkaError._PARTITION_EOF:
        log.warning("consumer error: %s", error)
    return False
