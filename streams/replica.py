"""An index replica: the whole vector topic, read into this process's own copy of the item
vectors (an embedded Qdrant shard, a Qdrant server collection, or the interaction processor's
in-memory copy), like a Kafka Streams GlobalKTable.

Every partition is assigned (no consumer group: each copy needs every item). The offsets applied
are checkpointed beside the copy after it is flushed, so a restart resumes there instead of
re-reading the topic; a copy without a checkpoint starts from the beginning. The replica is
ready once it has read up to the ends the partitions had when it started: a query worker
reports healthy only then (docs/architecture.md, "Topology").

`plan_replica_batch` is pure (records + what is stored -> what to write).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from recstream.core.index import ItemPayload, ItemStore, Vector
from recstream.infra.messages import poll_available, raise_if_fatal
from recstream.schemas.errors import InvalidMessageError
from recstream.schemas.vectors import VectorRecord, decode_vector_record
from recstream.streams.replica_metrics import (
    REPLICA_LAG,
    REPLICA_READY,
    REPLICA_RECORDS,
    REPLICA_RETRIES,
)

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 5.0
PURGE_EVERY_S = 3600.0
RETRY_PAUSE_S = 1.0
_BATCH = 2000
_POLL_S = 0.5


@dataclass
class ReplicaPlan:
    upserts: list[tuple[ItemPayload, Vector]] = field(default_factory=list)
    removals: list[str] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str, n: int = 1) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + n


def plan_replica_batch(
    records: Sequence[tuple[str, VectorRecord | None]], stored: Mapping[str, ItemPayload]
) -> ReplicaPlan:
    """Per item, its last record of the batch (None: removed). A record older than what the
    copy holds is skipped, so the catalog processor's own direct write is never rolled back by
    its earlier record arriving late; one equal to it is not written again."""
    latest: dict[str, VectorRecord | None] = {}
    for item_id, record in records:
        latest[item_id] = record
    plan = ReplicaPlan()
    plan.count("superseded", len(records) - len(latest))
    for item_id, record in latest.items():
        current = stored.get(item_id)
        if record is None:
            plan.removals.append(item_id)
            plan.count("removed")
        elif current is not None and record.payload.updated_ms < current.updated_ms:
            plan.count("stale")
        elif current is not None and record.payload == current:
            plan.count("unchanged")
        else:
            plan.upserts.append((record.payload, record.vector))
            plan.count("applied")
    return plan


class Checkpoint:
    """The offsets a copy has applied, in a file beside it (written atomically)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path

    def load(self, topic: str) -> dict[int, int]:
        if self._path is None or not self._path.exists():
            return {}
        saved = orjson.loads(self._path.read_bytes())
        if saved.get("topic") != topic:
            return {}
        return {int(p): int(o) for p, o in saved["offsets"].items()}

    def save(self, topic: str, offsets: Mapping[int, int]) -> None:
        if self._path is None:
            return
        temporary = self._path.with_suffix(".tmp")
        temporary.write_bytes(
            orjson.dumps({"topic": topic, "offsets": {str(p): o for p, o in offsets.items()}})
        )
        temporary.replace(self._path)


class IndexReplica:
    """Keeps `store` equal to the vector topic; `run` until `stop`."""

    def __init__(
        self,
        consumer_config: dict[str, Any],
        topic: str,
        store: ItemStore,
        checkpoint: Checkpoint,
        *,
        name: str,
        tombstone_retention_ms: int,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._consumer = Consumer(
            # End-of-partition events: a partition whose last offsets compaction removed is
            # caught up without a record at its end.
            consumer_config | {"enable.auto.commit": False, "enable.partition.eof": True}
        )
        self._topic = topic
        self._store = store
        self._checkpoint = checkpoint
        self._name = name
        self._retention_ms = tombstone_retention_ms
        self._clock_ms = clock_ms
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._positions: dict[int, int] = {}
        self._ends: dict[int, int] = {}
        self._resumed_from: dict[int, int] = {}
        REPLICA_READY.labels(name).set(0)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        return self._ready.wait(timeout_s)

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        self._assign()
        saved_at = purged_at = time.monotonic()
        try:
            while not self._stopping.is_set():
                try:
                    applied = self.run_once()
                except Exception:
                    log.exception("replica %s: batch not applied; retrying", self._name)
                    REPLICA_RETRIES.labels(self._name).inc()
                    self._stopping.wait(RETRY_PAUSE_S)
                    continue
                now = time.monotonic()
                if applied and now - saved_at >= CHECKPOINT_EVERY_S:
                    self._save()
                    saved_at = now
                if now - purged_at >= PURGE_EVERY_S:
                    self._store.purge_deleted(self._clock_ms() - self._retention_ms)
                    purged_at = now
        finally:
            self._save()
            self._consumer.close()

    def _assign(self) -> None:
        metadata = self._consumer.list_topics(self._topic, timeout=30)
        partitions = sorted(metadata.topics[self._topic].partitions)
        self._resumed_from = self._checkpoint.load(self._topic)
        for partition in partitions:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, partition), timeout=30
            )
            self._ends[partition] = high
            self._positions[partition] = max(self._resumed_from.get(partition, low), low)
        self._consumer.assign(
            [
                TopicPartition(self._topic, p, self._resumed_from.get(p, OFFSET_BEGINNING))
                for p in partitions
            ]
        )
        log.info(
            "replica %s: reading %s from %s",
            self._name,
            self._topic,
            "its checkpoint" if self._resumed_from else "the beginning",
        )
        self._mark_ready_when_caught_up()

    def run_once(self) -> int:
        """Apply what is there (waiting up to half a second for it); the records applied."""
        messages = poll_available(self._consumer, _BATCH, _POLL_S)
        before = dict(self._positions)
        records: list[tuple[str, VectorRecord | None]] = []
        for message in messages:
            error = message.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                partition, end = message.partition() or 0, message.offset() or 0
                self._positions[partition] = max(self._positions.get(partition, 0), end)
                continue
            if error is not None:
                raise_if_fatal(error)
                log.warning("replica %s: %s", self._name, error)
                continue
            self._positions[message.partition() or 0] = (message.offset() or 0) + 1
            decoded = self._decode(message.key(), message.value())
            if decoded is not None:
                records.append(decoded)
        if records:
            try:
                self._apply(records)
            except Exception:  # the copy failed (an index outage): read the batch again
                self._rewind(before)
                raise
        self._mark_ready_when_caught_up()
        return len(records)

    def _rewind(self, positions: dict[int, int]) -> None:
        for partition, offset in positions.items():
            if self._positions.get(partition) != offset:
                self._consumer.seek(TopicPartition(self._topic, partition, offset))
        self._positions = positions

    def _decode(
        self, key: bytes | None, value: bytes | None
    ) -> tuple[str, VectorRecord | None] | None:
        if key is None:
            REPLICA_RECORDS.labels(self._name, "invalid").inc()
            log.error("replica %s: a vector record without an item id, skipped", self._name)
            return None
        try:
            return key.decode(), None if value is None else decode_vector_record(value)
        except (InvalidMessageError, UnicodeDecodeError) as error:
            REPLICA_RECORDS.labels(self._name, "invalid").inc()
            log.error("replica %s: vector record %r skipped: %s", self._name, key, error)
            return None

    def _apply(self, records: Sequence[tuple[str, VectorRecord | None]]) -> None:
        ids = sorted({item_id for item_id, _ in records})
        stored = self._store.retrieve(ids, with_vectors=False, include_deleted=True)
        plan = plan_replica_batch(records, {k: r.payload for k, r in stored.items()})
        if plan.upserts:
            self._store.upsert(plan.upserts)
        if plan.removals:
            self._store.delete(plan.removals)
        for outcome, count in plan.outcomes.items():
            REPLICA_RECORDS.labels(self._name, outcome).inc(count)

    def _mark_ready_when_caught_up(self) -> None:
        behind = sum(max(0, end - self._positions.get(p, 0)) for p, end in self._ends.items())
        if not self._ready.is_set():
            if behind == 0:
                self._save()  # before anyone is told: a kill once ready resumes from here
                self._ready.set()
                REPLICA_READY.labels(self._name).set(1)
                log.info("replica %s: caught up (%d items)", self._name, self._store.count())
            REPLICA_LAG.labels(self._name).set(behind)
            return
        REPLICA_LAG.labels(self._name).set(self._lag())

    def _lag(self) -> int:
        behind = 0
        for partition, position in self._positions.items():
            try:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self._topic, partition), cached=True
                )
            except KafkaException:
                continue
            behind += max(0, high - position)
        return behind

    def _save(self) -> None:
        """The copy is flushed first: the checkpoint never runs ahead of what is durable."""
        self._store.flush()
        self._checkpoint.save(self._topic, self._positions)
