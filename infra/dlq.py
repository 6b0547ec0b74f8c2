"""Dead-letter records: the original key and bytes, with the reason in headers.

A dead letter must always be deliverable, or the record it stands for stalls its partition
forever: a record near the broker's size limit plus our headers no longer fits. Such a letter is
sent truncated (the headers say so and keep the original size and digest), and one the broker
refuses as too large is sent again with a short value. Only an unreachable broker can make
`flush` fail, and then retrying is right.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import Counter

from recstream.infra.errors import DeadLetterError
from recstream.infra.messages import Record
from recstream.infra.metrics import DEAD_LETTERS, DEAD_LETTERS_TRUNCATED
from recstream.infra.topics import dlq_topic
from recstream.schemas.errors import InvalidMessageError

log = logging.getLogger(__name__)
T = TypeVar("T")
Headers = list[tuple[str, str | bytes | None]]

REASON_HEADER = "x-recstream-error-reason"
DETAIL_HEADER = "x-recstream-error-detail"
TRUNCATED_HEADER = "x-recstream-truncated-from-bytes"
DIGEST_HEADER = "x-recstream-original-sha256"
# librdkafka's default message.max.bytes; the broker's default limit is a little above it.
MAX_LETTER_BYTES = 1_000_000
# Room for the record's headers and framing within MAX_LETTER_BYTES.
_OVERHEAD_BYTES = 4096
# What is kept of a value when even a trimmed letter is refused (a topic with a lower limit).
_SHORT_VALUE_BYTES = 16 * 1024
_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE})


@dataclass(frozen=True, slots=True)
class _Letter:
    topic: str
    value: bytes | None
    key: bytes | None
    headers: Headers


def fit(
    value: bytes | None, key: bytes | None, limit: int
) -> tuple[bytes | None, bytes | None, Headers]:
    """Value and key cut so that both fit in `limit` bytes, and the headers that say what was
    cut (original size and digest); unchanged (no headers) when they fit already."""
    size = len(value or b"") + len(key or b"")
    if size <= limit:
        return value, key, []
    headers: Headers = []
    if key is not None and len(key) > limit // 4:
        headers.append(("x-recstream-key-truncated-from-bytes", str(len(key)).encode()))
        key = key[: limit // 4]
    if value is not None:
        headers += [
            (TRUNCATED_HEADER, str(len(value)).encode()),
            (DIGEST_HEADER, hashlib.sha256(value).hexdigest().encode()),
        ]
        value = value[: max(0, limit - len(key or b""))]
    return value, key, headers


class DeadLetterWriter:
    """Publishes refused messages to `<topic>.dlq`. `flush` must succeed before offsets are
    committed, so a refused message is never lost between the source topic and its DLQ."""

    def __init__(self, kafka_config: dict[str, Any], max_bytes: int = MAX_LETTER_BYTES) -> None:
        self._producer = Producer(
            kafka_config
            | {"enable.idempotence": True, "linger.ms": 5, "message.max.bytes": max_bytes}
        )
        self._limit = max_bytes - _OVERHEAD_BYTES
        self._failures: list[str] = []
        self._too_large: list[_Letter] = []

    def send(self, message: Record, error: InvalidMessageError) -> None:
        """Queue a dead letter for `message`; never raises for the message's own size."""
        headers: Headers = [
            (REASON_HEADER, error.reason.encode()),
            (DETAIL_HEADER, error.detail[:1000].encode()),
            ("x-recstream-source-topic", message.topic.encode()),
            ("x-recstream-source-partition", str(message.partition).encode()),
            ("x-recstream-source-offset", str(message.offset).encode()),
            ("x-recstream-failed-at-ms", str(int(time.time() * 1000)).encode()),
        ]
        value, key, cut = fit(message.value, message.key, self._limit)
        if cut:
            DEAD_LETTERS_TRUNCATED.inc()
        self._produce(_Letter(dlq_topic(message.topic), value, key, headers + cut))

    def _produce(self, letter: _Letter) -> None:
        def delivered(error: KafkaError | None, _: Message) -> None:
            if error is None:
                return
            if error.code() in _TOO_LARGE:
                self._too_large.append(letter)
            else:
                self._failures.append(str(error))

        while True:
            try:
                self._producer.produce(
                    letter.topic,
                    letter.value,
                    key=letter.key,
                    headers=letter.headers,
                    on_delivery=delivered,
                )
                break
            except BufferError:  # the local queue is full: let deliveries drain
                self._producer.poll(0.1)
            except KafkaException as failure:
                if failure.args[0].code() in _TOO_LARGE:
                    self._too_large.append(letter)
                else:  # e.g. the DLQ topic does not exist: flush reports it
                    self._failures.append(str(failure.args[0]))
                break
        self._producer.poll(0)

    def _resend_short(self) -> None:
        """Letters the broker refused as too large (a DLQ topic with a lower limit than ours),
        again with a short value; the headers keep the original's size and digest."""
        letters, self._too_large = self._too_large, []
        for letter in letters:
            if len(letter.value or b"") + len(letter.key or b"") <= _SHORT_VALUE_BYTES:
                self._failures.append(f"a dead letter for {letter.topic} is too large even short")
                continue
            value, key, cut = fit(letter.value, letter.key, _SHORT_VALUE_BYTES)
            names = {name for name, _ in letter.headers}
            headers = letter.headers + [h for h in cut if h[0] not in names]
            self._produce(_Letter(letter.topic, value, key, headers))

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
                self.dead_letter(message, error)
                refused.inc()
        return decoded

    def dead_letter(self, message: Record, error: InvalidMessageError) -> None:
        """Send one refused message and count it by source topic and reason."""
        self.send(message, error)
        DEAD_LETTERS.labels(message.topic, error.reason).inc()

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every dead letter is acknowledged; raise DeadLetterError if any was not
        (the broker is unreachable, or the DLQ topic is missing): the caller must not commit."""
        remaining = self._producer.flush(timeout_s)
        while self._too_large and not remaining:
            self._resend_short()
            remaining = self._producer.flush(timeout_s)
        failures, self._failures = self._failures, []
        if remaining or failures:
            raise DeadLetterError(
                f"dead-letter delivery failed ({remaining} pending): {failures[:3]}"
            )
