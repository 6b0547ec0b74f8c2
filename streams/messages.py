"""A consumed Kafka record as plain values, so processing never touches a consumer."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import Consumer, Message


@dataclass(slots=True)  # not frozen: one per record consumed, and frozen init costs 4x
class RawMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def from_kafka(message: Message) -> RawMessage:
    """The plain values of a confluent-kafka record."""
    headers = []
    for pair in message.headers() or []:
        key, value = pair[0], pair[1]
        headers.append((key, value if isinstance(value, bytes) else (value or "").encode()))
    return RawMessage(
        message.topic() or "",
        message.partition() or 0,
        message.offset() or 0,
        message.key(),
        message.value(),
        tuple(headers),
    )


def poll_available(consumer: Consumer, limit: int, timeout_s: float) -> list[Message]:
    """Wait up to timeout_s for one message, then take what else is already there without
    waiting. (`consume(n, timeout)` waits for n messages or the whole timeout: at low request
    rates that wait is the latency.)"""
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    return [first, *consumer.consume(limit - 1, 0)]
