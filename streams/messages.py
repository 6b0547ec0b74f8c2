"""A consumed Kafka record as plain values, so processing never touches a consumer."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import Message


@dataclass(frozen=True, slots=True)
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
