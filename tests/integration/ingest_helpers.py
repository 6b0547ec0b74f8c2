"""Shared pieces of the ingest integration tests: isolated settings, producing, draining."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, Producer

from recstream.compose import interaction_consumer
from recstream.core.index import ItemPayload, collection_name
from recstream.core.pressure import QueryPressure
from recstream.core.settings import Settings
from recstream.infra import topics
from recstream.infra.clients import kafka_config
from recstream.infra.dlq import REASON_HEADER, DeadLetterWriter
from recstream.infra.stores.qdrant_edge_index import QdrantEdgeIndex
from recstream.infra.stores.registry import redis_session_store
from recstream.infra.vector_log import publish_item_vectors
from recstream.produce import send_waiting
from recstream.schemas.events import InteractionEvent
from recstream.staging.verdicts import Snapshot, state_differences
from recstream.streams.interactions import InteractionConsumer

HOUR = 3600 * 1000
T0 = int(time.time() * 1000) - 90 * 24 * HOUR  # far enough back for every generated gap
TYPES = ["view", "click", "add_to_cart", "purchase", "like", "dislike", "skip"]
DIM = 384
MODEL_ID = "all-MiniLM-L6-v2"  # the worker's default model: its collection holds our test items


def isolated_settings(base: Settings, unique: str, tmp_path: Path, **changes: object) -> Settings:
    """Settings whose topics, consumer groups, Redis keys and index are this test's own."""
    return base.isolated(
        unique,
        **{
            "partitions_interactions": 4,
            "partitions_catalog": 2,
            "qdrant_path": tmp_path / "qdrant",
            "interaction_batch_size": 500,
        }
        | changes,
    )


def random_events(count: int, users: int, seed: int = 1) -> list[InteractionEvent]:
    """Events of `users` users over 30 items: every type, ratings, and gaps of seconds,
    minutes and hours (deterministic for a seed)."""
    rng = random.Random(seed)
    clock = {f"user{u}": T0 for u in range(users)}
    events = []
    for n in range(count):
        user = f"user{rng.randrange(users)}"
        clock[user] += rng.choice([1_000, 60_000, 5 * HOUR])  # seconds, minutes and long gaps
        kind = rng.choice([*TYPES, "rating"])
        value = rng.choice([0.5, 2.0, 3.5, 5.0]) if kind == "rating" else None
        events.append(
            InteractionEvent(
                f"ev{seed}-{n}", user, f"item{rng.randrange(30)}", kind, clock[user], value=value
            )
        )
    return events


def create_topics(settings: Settings) -> list[str]:
    specs = topics.planned_topics(settings)
    topics.ensure_topics(settings, specs)
    return [spec.name for spec in specs]


def open_index(settings: Settings) -> QdrantEdgeIndex:
    """The worker's collection, with collaborative slots as the worker would create them."""
    name = collection_name(MODEL_ID, DIM)
    path = settings.qdrant_embedded_path / name
    return QdrantEdgeIndex.open(path, name, DIM, collab_dimension=settings.collab_factors)


def seed_items(
    index: QdrantEdgeIndex, count: int, seed: int = 5, settings: Settings | None = None
) -> dict[str, np.ndarray]:
    """Items with random unit vectors (how vectors were made does not matter here), in `index`
    and, with settings, in the vector topic (where worker processes read them)."""
    rng = np.random.default_rng(seed)
    vectors = {}
    for n in range(count):
        v = rng.normal(size=DIM).astype(np.float32)
        # float16 values: the interaction processor's precision, so references computed from
        # these vectors see exactly what it sees.
        vectors[f"item{n}"] = (v / np.linalg.norm(v)).astype(np.float16).astype(np.float32)
    items = [
        (ItemPayload(i, f"Item {i}", "Drama" if n % 2 else "Comedy", (), True, f"h{n}", 1), v)
        for n, (i, v) in enumerate(vectors.items())
    ]
    index.upsert(items)
    if settings is not None:
        publish_item_vectors(settings, items, MODEL_ID)
    return vectors


def produce(
    settings: Settings, topic: str, records: Sequence[tuple[bytes | None, bytes | None]]
) -> None:
    # Idempotent, as the product's producers are: a retried request (a topic just created may
    # answer "not leader" at first) can then not reorder a key's records, and the tests compare
    # per-user state built from that order.
    producer = Producer(kafka_config(settings) | {"linger.ms": 5, "enable.idempotence": True})
    for key, value in records:
        send_waiting(producer, topic, value, key)
        producer.poll(0)
    assert producer.flush(30) == 0


def produce_events(settings: Settings, events: Sequence[InteractionEvent]) -> None:
    produce(
        settings, settings.topic_interactions, [(e.user_id.encode(), e.to_json()) for e in events]
    )


def make_consumer(
    settings: Settings, index: QdrantEdgeIndex, pressure: QueryPressure | None = None
) -> InteractionConsumer:
    dead_letters = DeadLetterWriter(kafka_config(settings))
    store = redis_session_store(settings)
    return interaction_consumer(settings, index, store, dead_letters, pressure=pressure)


def drain(
    consumer: InteractionConsumer, expected: int, timeout_s: float = 60.0, close: bool = True
) -> int:
    """Run batches until `expected` records were consumed; then close the consumer."""
    seen = 0
    deadline = time.monotonic() + timeout_s
    try:
        while seen < expected and time.monotonic() < deadline:
            seen += consumer.run_once()
    finally:
        if close:
            consumer.close()
    assert seen == expected, f"consumed {seen} of {expected} records"
    return seen


def assert_same_state(a: Snapshot, b: Snapshot) -> None:
    differences = state_differences(a, b)
    assert not differences, f"this run's state differs from the other's: {differences}"


def delete_namespace(settings: Settings) -> None:
    store = redis_session_store(settings)
    store.delete_namespace()
    store.close()


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def read_dead_letters(settings: Settings, topic: str, count: int) -> list[DeadLetter]:
    """The first `count` records of a DLQ topic (fewer if they do not come within 20 s)."""
    consumer = Consumer(
        kafka_config(settings)
        | {"group.id": f"{topic}-reader-{time.monotonic_ns()}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    found: list[DeadLetter] = []
    deadline = time.monotonic() + 20
    try:
        while len(found) < count and time.monotonic() < deadline:
            for message in consumer.consume(10, 0.5):
                if message.error() is None:
                    headers = {k: v or b"" for k, v in message.headers() or []}
                    reason = headers[REASON_HEADER].decode()
                    found.append(DeadLetter(reason, message.key(), message.value(), headers))
    finally:
        consumer.close()
    return found


def near_limit_record(size: int = 1_040_000) -> bytes:
    """A JSON record just under the broker's default size limit (1 MiB): valid JSON, refused
    as oversized by every decoder, too large to dead-letter with headers as it is."""
    return b'{"pad": "' + b"x" * (size - 11) + b'"}'


def large_record_producer(settings: Settings) -> Producer:
    return Producer(kafka_config(settings) | {"message.max.bytes": 1_048_576})
