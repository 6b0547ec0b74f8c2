"""Dead-letter records: the original key and bytes, with the reason in headers."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from confluent_kafka import KafkaError, Message, Producer
from prometheus_client import Counter

from recstream.errors import InvalidMessageError, RecstreamError
from recstream.infra.topics import dlq_topic
from recstream.streams import metrics
from recstream.streams.messages import Record

T = TypeVar("T")

REASON_HEADER = "x-recstream-error-reason"
DETAIL_HEADER = "x-recstream-error-detail"


class DeadLetterWriter:
    """Publishes refused messages to `<topic>.dlq`. `flush` must succeed before offsets are
    committed, so a refused message is never lost between the source topic and its DLQ."""

    def __init__(self, kafka_config: dict[str, Any]) -> None:
        self._producer = Producer(kafka_config | {"enable.idempotence": True, "linger.ms": 5})
        self._failures: list[str] = []

    def send(self, message: Record, error: InvalidMessageError) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            (REASON_HEADER, error.reason.encode()),
            (DETAIL_HEADER, error.detail[:1000].encode()),
            ("x-recstream-source-topic", message.topic.encode()),
            ("x-recstream-source-partition", str(message.partition).encode()),
            ("x-recstream-source-offset", str(message.offset).encode()),
            ("x-recstream-failed-at-ms", str(int(time.time() * 1000)).encode()),
        ]
        self._producer.produce(
            dlq_topic(message.topic),
            message.value,
            key=message.key,
            headers=headers,
            on_delivery=self._on_delivery,
        )
        self._producer.poll(0)

    def _on_delivery(self, error: KafkaError | None, _: Message) -> None:
        if error is not None:
            self._failures.append(str(error))

    def decode_all(
        self,
        messages: Sequence[Record],
        decode: Callable[[bytes | None], T],
        refused: Counter,
    ) -> list[T]:
        """Decode each message; a refused one is dead-lettered and counted, never raised."""
        decoded = []
        for message in messages:
            try:
                decoded.append(decode(message.value))
            except InvalidMessageError as error:
                self.send(message, error)
                refused.inc()
                metrics.DEAD_LETTERS.labels(message.topic, error.reason).inc()
        return decoded

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every dead letter is acknowledged; raise if any was not."""
        remaining = self._producer.flush(timeout_s)
        failures, self._failures = self._failures, []
        if remaining or failures:
            raise RecstreamError(
                f"dead-letter delivery failed ({remaining} pending): {failures[:3]}"
            )
