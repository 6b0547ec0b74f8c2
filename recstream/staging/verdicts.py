"""The staging run's verdicts: the state the faulty run built against a clean replay of the same
log, every acknowledged event in the log, every malformed record in its DLQ with a reason,
every request answered."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, TopicPartition

from recstream.compose import session_config
from recstream.core.settings import Settings
from recstream.infra.clients import kafka_config
from recstream.infra.dlq import REASON_HEADER
from recstream.infra.stores.registry import redis_session_store
from recstream.infra.topics import dlq_topic, vector_topic
from recstream.infra.vector_log import read_vector_topic
from recstream.schemas.errors import InvalidMessageError
from recstream.schemas.events import EventDecoder
from recstream.streams.reference import reference_apply_batch

VECTOR_TOLERANCE = 1e-5
Snapshot = dict[str, dict[str, Any]]  # part -> user or item -> value
Record = tuple[bytes | None, bytes | None, dict[str, Any]]  # key, value, headers (str -> bytes)


def state_snapshot(
    settings: Settings, users: Sequence[str], items: Sequence[str], reference_ms: int
) -> Snapshot:
    """Everything the interaction processor stores for these users and items, comparable across
    namespaces (popularity rescaled from the namespace's own landmark to reference_ms)."""
    store = redis_session_store(settings)
    try:
        states = store.load_states(users)
        landmark = store.popularity_landmark() or 0
        scale = 2 ** ((landmark - reference_ms) / settings.popularity_half_life_ms)
        return {
            "vectors": {u: states[u].vector for u in users if u in states},
            "counters": {
                u: (
                    states[u].count,
                    states[u].last_time,
                    states[u].floor,
                    sorted(states[u].guard_ids),
                    states[u].recent_items,
                )
                for u in users
                if u in states
            },
            "seen": {u: store.seen(u) for u in users},
            "covis": {i: store.covisitation(i, 2 * settings.covis_max_neighbours) for i in items},
            "next": store.transitions_many(items, 2 * settings.covis_max_neighbours),
            "popularity": {i: s * scale for i, s in store.popularity(100_000).items()},
        }
    finally:
        store.close()


def state_differences(
    a: Snapshot, b: Snapshot, vector_tolerance: float = VECTOR_TOLERANCE, limit: int = 5
) -> list[str]:
    """What differs between two snapshots (this run first), at most `limit` examples per part;
    empty when they agree (vectors within `vector_tolerance`, popularity within 1e-6
    relative)."""
    found = []
    for part in ("counters", "seen", "covis", "next"):
        differing = [
            f"{part} of {key}: {a[part].get(key)!r} vs {b[part].get(key)!r}"
            for key in sorted(a[part].keys() | b[part].keys())
            if a[part].get(key) != b[part].get(key)
        ]
        found += differing[:limit]
    pa, pb = a["popularity"], b["popularity"]
    found += [
        f"popularity of {item}: {pa.get(item)} vs {pb.get(item)}"
        for item in sorted(pa.keys() | pb.keys())
        if item not in pa
        or item not in pb
        or abs(float(pa[item]) - float(pb[item])) > 1e-6 * max(1.0, abs(float(pa[item])))
    ][:limit]
    va, vb = a["vectors"], b["vectors"]
    found += [
        f"vector of {user}"
        for user in sorted(va.keys() | vb.keys())
        if user not in va
        or user not in vb
        or not np.allclose(va[user], vb[user], atol=vector_tolerance)
    ][:limit]
    return found


def records_in(settings: Settings, topic: str) -> int:
    """How many records the topic's partitions hold (end minus start offsets)."""
    consumer = Consumer(
        kafka_config(settings) | {"group.id": f"staging-size-{time.monotonic_ns()}"}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        total = 0
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            total += high - low
        return total
    finally:
        consumer.close()


def item_vector_difference(a: Settings, b: Settings, items: Sequence[str]) -> float | None:
    """The largest difference between two pipelines' vectors of these items (None: an item
    lacks a vector in one of them)."""
    vectors_a = read_vector_topic(a, vector_topic(a))
    vectors_b = read_vector_topic(b, vector_topic(b))
    if any(i not in vectors_a or i not in vectors_b for i in items):
        return None
    return max(
        (float(np.abs(vectors_a[i].vector - vectors_b[i].vector).max()) for i in items),
        default=0.0,
    )


def read_topic(settings: Settings, topic: str) -> list[Record]:
    """Every record of a topic now (key, value, headers), read to its end offsets."""
    consumer = Consumer(
        kafka_config(settings)
        | {"group.id": f"staging-reader-{time.monotonic_ns()}", "enable.auto.commit": False}
    )
    try:
        metadata = consumer.list_topics(topic, timeout=30).topics[topic]
        parts = [TopicPartition(topic, p, 0) for p in metadata.partitions]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=30)[1] for p in parts}
        consumer.assign(parts)
        records: list[Record] = []
        pending = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + 300
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(1000, 1.0):
                if message.error() is not None:
                    continue
                headers = dict(message.headers() or [])
                records.append((message.key(), message.value(), headers))
                partition = message.partition() or 0
                if (message.offset() or 0) + 1 >= ends[partition]:
                    pending.discard(partition)
        return records
    finally:
        consumer.close()


@dataclass(frozen=True)
class LogVerdict:
    acknowledged: int
    missing: int  # acknowledged, not in the log
    duplicated: int  # in the log more than once

    @property
    def passed(self) -> bool:
        return self.missing == 0 and self.duplicated == 0


def log_verdict(settings: Settings, acked: dict[str, str]) -> LogVerdict:
    seen: dict[str, int] = {}
    for key, value, _ in read_topic(settings, settings.topic_interactions):
        if key is None or key.startswith((b"bad-", b"big-")) or value is None:
            continue
        event_id = orjson.loads(value)["event_id"]
        seen[event_id] = seen.get(event_id, 0) + 1
    missing = sum(1 for event_id in acked if event_id not in seen)
    return LogVerdict(len(acked), missing, sum(1 for n in seen.values() if n > 1))


@dataclass(frozen=True)
class DeadLetterVerdict:
    topic: str
    sent: int  # malformed records acknowledged by the broker
    dead_lettered: int  # of them, in the DLQ with a reason
    reasons: dict[str, int]

    @property
    def passed(self) -> bool:
        return self.dead_lettered == self.sent


def dead_letter_verdict(settings: Settings, topic: str, keys: set[str]) -> DeadLetterVerdict:
    reasons: dict[str, int] = {}
    found: set[str] = set()
    for key, _, headers in read_topic(settings, dlq_topic(topic)):
        reason = headers.get(REASON_HEADER, b"").decode()
        name = (key or b"").decode(errors="replace")
        if name in keys and reason:
            found.add(name)
            reasons[reason] = reasons.get(reason, 0) + 1
    return DeadLetterVerdict(topic, len(keys), len(found), reasons)


def oracle_covisits(settings: Settings, items: Sequence[str]) -> dict[str, dict[str, float]]:
    """The co-visit counts the whole interaction log gives by the plain per-event definition
    (streams/reference.py), applied in log order: a third opinion when the faulty run and the
    clean replay disagree."""
    decoder = EventDecoder()
    now_ms = int(time.time() * 1000)
    events = []
    for _, value, _ in read_topic(settings, settings.topic_interactions):
        try:
            events.append(decoder.interaction(value, now_ms))
        except InvalidMessageError:
            continue
    landmark = min((e.event_time for e in events), default=0)
    config = session_config(settings)
    effects = reference_apply_batch(events, {}, {}, {}, config, "", landmark)
    return {item: effects.covisits.get(item, {}) for item in items}
