"""The catalog processor's output: item vectors produced to the compacted vector topic
(`items.vectors.<model>`), each acknowledged (acks=all, idempotent producer) before the catalog
batch is committed. Every process that needs item vectors reads them from that topic
(recstream.streams.replica)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from recstream.core.index import ItemPayload, Vector
from recstream.core.settings import Settings
from recstream.infra.clients import kafka_config
from recstream.infra.topics import vector_topic
from recstream.schemas.vectors import VectorRecord, decode_vector_record


class VectorLogWriter:
    """Produces vector records keyed by item id; `flush` raises when one was not acknowledged."""

    def __init__(self, config: Mapping[str, Any], topic: str) -> None:
        self._producer = Producer(
            dict(config) | {"enable.idempotence": True, "acks": "all", "linger.ms": 5}
        )
        self._topic = topic
        self._failures: list[KafkaError] = []

    @property
    def topic(self) -> str:
        return self._topic

    def publish(self, records: Sequence[VectorRecord]) -> None:
        for record in records:
            self._produce(record.payload.item_id, record.encode())

    def _produce(self, item_id: str, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(
                    self._topic, value, item_id.encode(), on_delivery=self._delivered
                )
                return
            except BufferError:  # the local queue is full: let it drain
                self._producer.poll(0.1)

    def _delivered(self, error: KafkaError | None, _: Message) -> None:
        if error is not None:
            self._failures.append(error)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every record's acknowledgement; a KafkaException (an outage to the batch's
        retry) when one failed or is still pending."""
        remaining = self._producer.flush(timeout_s)
        failures, self._failures = self._failures, []
        if failures:
            raise KafkaException(failures[0])
        if remaining:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"{remaining} vector records"))


def publish_item_vectors(
    settings: Settings, items: Sequence[tuple[ItemPayload, Vector]], model_id: str | None = None
) -> None:
    """Items whose vectors were made elsewhere, written to the model's vector topic as the
    catalog processor would (benchmarks and tests seed catalogs this way)."""
    writer = VectorLogWriter(kafka_config(settings), vector_topic(settings, model_id))
    for start in range(0, len(items), 10_000):
        writer.publish([VectorRecord(p, v) for p, v in items[start : start + 10_000]])
        writer.flush(120)


def read_vector_topic(
    settings: Settings, topic: str, timeout_s: float = 60.0
) -> dict[str, VectorRecord]:
    """Every item's latest record in the vector topic as it ends now (item id -> VectorRecord;
    removed items absent): what a comparison of pipeline versions reads without a replica."""
    consumer = Consumer(
        kafka_config(settings)
        | {"group.id": f"read-{topic}", "enable.auto.commit": False, "enable.partition.eof": True}
    )
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
            for p in partitions
        }
        pending = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        latest: dict[str, VectorRecord | None] = {}
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                partition, offset = message.partition() or 0, message.offset() or 0
                key, value = message.key(), message.value()
                if message.error() is None and key is not None:
                    latest[key.decode()] = None if value is None else decode_vector_record(value)
                if offset + 1 >= ends.get(partition, 0) or message.error() is not None:
                    pending.discard(partition)
        return {item: record for item, record in latest.items() if record is not None}
    finally:
        consumer.close()
