"""The interaction processor against the real Kafka broker and Redis (in-process consumer)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer
from prometheus_client import REGISTRY

from recstream.core.pressure import QueryPressure
from recstream.core.settings import DEFAULT_EVENT_WEIGHTS, Settings
from recstream.infra import topics
from recstream.infra.clients import kafka_config
from recstream.infra.dlq import REASON_HEADER
from recstream.infra.messages import from_kafka
from recstream.infra.stores.qdrant_edge_index import QdrantEdgeIndex
from recstream.infra.stores.registry import redis_session_store
from recstream.infra.topics import dlq_topic
from recstream.schemas.events import InteractionEvent
from recstream.staging.verdicts import state_snapshot
from recstream.streams.interactions import YIELDING_BATCH, InteractionConsumer
from recstream.streams.reference import reference_vector
from tests.integration.ingest_helpers import (
    HOUR,
    T0,
    assert_same_state,
    create_topics,
    delete_namespace,
    drain,
    isolated_settings,
    make_consumer,
    open_index,
    produce,
    produce_events,
    random_events,
    seed_items,
)


@pytest.fixture
def env(
    infra: Settings, unique: str, tmp_path: Path
) -> Iterator[tuple[Settings, QdrantEdgeIndex, dict]]:
    settings = isolated_settings(infra, unique, tmp_path)
    names = create_topics(settings)
    index = open_index(settings)
    vectors = seed_items(index, 30)
    yield settings, index, vectors
    index.close()
    topics.delete_topics(settings, names)
    delete_namespace(settings)


def test_session_vectors_history_and_counters_match_the_formula(env) -> None:  # type: ignore[no-untyped-def]
    settings, index, _ = env
    events = random_events(400, users=6)
    produce_events(settings, events)
    consumer = make_consumer(settings, index)
    drain(consumer, len(events))
    stored_vectors = {
        i: r.vector for i, r in index.retrieve([f"item{n}" for n in range(30)]).items()
    }
    store = redis_session_store(settings)
    states = store.load_states({e.user_id for e in events})
    for user, state in states.items():
        mine = [e for e in events if e.user_id == user]
        expected = reference_vector(
            mine, stored_vectors, DEFAULT_EVENT_WEIGHTS, settings.session_half_life_ms
        )
        np.testing.assert_allclose(state.vector, expected, atol=1e-5)
        assert state.count == len(mine)
        assert store.seen(user) == {
            e.item_id: max(x.event_time for x in mine if x.item_id == e.item_id) for e in mine
        }
    positive = [
        e
        for e in events
        if e.event_type not in ("dislike", "skip")
        and not (e.event_type == "rating" and (e.value or 0) < 3)
    ]
    assert set(store.popularity(100)) == {e.item_id for e in positive}
    assert store.covisitation("item3")  # co-visits were recorded
    store.close()


def test_replaying_the_same_events_changes_nothing(env) -> None:  # type: ignore[no-untyped-def]
    settings, index, _ = env
    events = random_events(300, users=5, seed=2)
    users = sorted({e.user_id for e in events})
    items = [f"item{n}" for n in range(30)]
    produce_events(settings, events)
    consumer = make_consumer(settings, index)
    drain(consumer, len(events), close=False)
    before = state_snapshot(settings, users, items, T0)
    produce_events(settings, events)  # the same events again, at new offsets
    drain(consumer, len(events))
    assert_same_state(state_snapshot(settings, users, items, T0), before)


def test_bad_events_go_to_the_dlq_with_reasons_and_good_ones_are_applied(env) -> None:  # type: ignore[no-untyped-def]
    settings, index, _ = env
    good = random_events(20, users=1, seed=3)
    bad = [
        b"\x00not json",
        orjson.dumps({"schema_version": 9}),
        orjson.dumps({"schema_version": 1, "event_id": "x"}),
        None,
    ]
    records = [(e.user_id.encode(), e.to_json()) for e in good[:10]]
    records += [(b"k", value) for value in bad]
    records += [(e.user_id.encode(), e.to_json()) for e in good[10:]]
    produce(settings, settings.topic_interactions, records)
    drain(make_consumer(settings, index), len(records))
    store = redis_session_store(settings)
    assert store.load_states(["user0"])["user0"].count == 20
    store.close()
    letters = _dead_letters(settings, dlq_topic(settings.topic_interactions), len(bad))
    assert [(reason, value) for reason, value, _ in letters] == [
        ("undecodable", bad[0]),
        ("unknown_schema_version", bad[1]),
        ("schema_violation", bad[2]),
        ("undecodable", None),
    ]
    # Each keeps its key and says where it came from: one partition (one key), in order.
    sources = [source for _, _, source in letters]
    assert {(key, topic, partition) for key, topic, partition, _ in sources} == {
        (b"k", settings.topic_interactions.encode(), sources[0][2])
    }
    offsets = [int(offset) for *_, offset in sources]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(bad)


_Source = tuple[bytes | None, bytes, bytes, bytes]  # key; source topic, partition, offset


def _dead_letters(
    settings: Settings, topic: str, count: int
) -> list[tuple[str, bytes | None, _Source]]:
    consumer = Consumer(
        kafka_config(settings) | {"group.id": f"{topic}-reader", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    found: list[tuple[str, bytes | None, _Source]] = []
    deadline = time.monotonic() + 20
    while len(found) < count and time.monotonic() < deadline:
        for message in consumer.consume(10, 0.5):
            if message.error() is None:
                headers = dict(message.headers() or [])
                source = (
                    message.key(),
                    headers["x-recstream-source-topic"],
                    headers["x-recstream-source-partition"],
                    headers["x-recstream-source-offset"],
                )
                found.append((headers[REASON_HEADER].decode(), message.value(), source))
    consumer.close()
    return found


def test_a_crash_between_write_and_commit_ends_in_the_same_state_as_a_clean_run(
    env,
    infra: Settings,
    unique: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    settings, index, _ = env
    events = random_events(1500, users=20, seed=4)
    produce_events(settings, events)
    crashing = make_consumer(settings, index)
    crashing._stop.set()
    applied = 0
    while applied < 600:
        messages = crashing._consumer.consume(200, 1.0)
        crashing._processor.process([from_kafka(m) for m in messages])
        applied += len(messages)
    crashing._consumer.close()
    drain(make_consumer(settings, index), len(events))  # restarts from the last commit: 0
    _assert_same_state_as_a_clean_run(settings, index, events, infra, unique, tmp_path)


@pytest.mark.parametrize("write_chunk", [5000, 40], ids=["one-chunk", "chunks-of-40"])
def test_a_failed_write_is_applied_again_and_nothing_is_lost_or_doubled(
    env,
    infra: Settings,
    unique: str,
    tmp_path: Path,
    write_chunk: int,  # type: ignore[no-untyped-def]
) -> None:
    """The write of one batch overlaps the applying of the next: when a write fails, the next
    batch (built on it) is void, the failed one is applied again from its kept records. With
    small write chunks a batch is several atomic writes (whole users each), and the failure
    comes after some of the batch's chunks are stored: their events are replayed as no-ops."""
    settings, index, _ = env
    settings = settings.model_copy(
        update={"interaction_batch_size": 150, "interaction_write_chunk": write_chunk}
    )
    events = random_events(1500, users=20, seed=6)
    produce_events(settings, events)
    consumer = make_consumer(settings, index)
    store = consumer._processor._store
    real_write, calls = store.write_batch, []  # events per write call

    def failing_twice(effects, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(effects.outcomes.total())
        if len(calls) in (3, 4):  # Redis refuses two writes in a row mid-stream
            raise ConnectionError("injected: Redis went away")
        real_write(effects, *args, **kwargs)

    store.write_batch = failing_twice  # type: ignore[method-assign]
    drain(consumer, len(events))
    assert len(calls) > 5
    if write_chunk < 150:  # so the first failure came after the first chunks of its batch
        assert calls[0] < 100 and calls[1] < 100  # a chunk: 40 events and its last user's rest
    _assert_same_state_as_a_clean_run(settings, index, events, infra, unique, tmp_path)


def _assert_same_state_as_a_clean_run(  # type: ignore[no-untyped-def]
    settings: Settings, index, events, infra: Settings, unique: str, tmp_path: Path
) -> None:
    users = sorted({e.user_id for e in events})
    items = [f"item{n}" for n in range(30)]
    clean = isolated_settings(infra, unique + "clean", tmp_path, qdrant_path=settings.qdrant_path)
    clean_names = create_topics(clean)
    try:
        produce_events(clean, events)
        drain(make_consumer(clean, index), len(events))
        assert_same_state(
            state_snapshot(settings, users, items, T0), state_snapshot(clean, users, items, T0)
        )
    finally:
        topics.delete_topics(clean, clean_names)
        delete_namespace(clean)


def _batch_sizes(consumer: InteractionConsumer, expected: int) -> list[int]:
    """Sizes of the batches committed until `expected` records were; the consumer is closed."""
    sizes: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while sum(sizes) < expected and time.monotonic() < deadline:
            if committed := consumer.run_once():
                sizes.append(committed)
    finally:
        consumer.close()
    assert sum(sizes) == expected
    return sizes


def test_while_requests_are_in_hand_the_loop_takes_small_batches(env) -> None:  # type: ignore[no-untyped-def]
    settings, index, _ = env
    settings = settings.model_copy(update={"interaction_batch_size": 5000})
    events = random_events(3000, users=20, seed=8)
    produce_events(settings, events)
    assert max(_batch_sizes(make_consumer(settings, index), len(events))) > YIELDING_BATCH

    pressure = QueryPressure()
    pressure.taken(1)  # never answered here: the loop waits its bound each time, then goes on
    yielding = settings.model_copy(update={"consumer_group": settings.consumer_group + "-y"})
    sizes = _batch_sizes(make_consumer(yielding, index, pressure), len(events))
    assert max(sizes) <= YIELDING_BATCH


class _CountingPressure(QueryPressure):
    """A real QueryPressure that also counts how often the processor stepped back for it."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def wait_idle(self, timeout_s: float) -> bool:
        self.waits += 1
        return super().wait_idle(timeout_s)


def test_the_processor_steps_back_before_each_chunk_it_applies_and_writes(env) -> None:  # type: ignore[no-untyped-def]
    settings, index, _ = env
    settings = settings.model_copy(update={"interaction_write_chunk": 40})
    events = random_events(600, users=20, seed=9)
    produce_events(settings, events)
    pressure = _CountingPressure()
    consumer = make_consumer(settings, index, pressure)
    store = consumer._processor._store
    real_write, writes = store.write_batch, []

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        writes.append(1)
        real_write(*args, **kwargs)

    store.write_batch = counted  # type: ignore[method-assign]
    drain(consumer, len(events))
    assert len(writes) > 3  # several chunks per batch
    assert pressure.waits == 2 * len(writes)  # no request was in hand: none of them waited


def _outcomes() -> dict[str, float]:
    return {
        outcome: REGISTRY.get_sample_value(
            "recstream_interactions_events_total", {"outcome": outcome}
        )
        or 0.0
        for outcome in ("applied", "too_late", "too_late_guard_cap")
    }


def test_late_events_are_counted_by_reason_and_logged_above_the_threshold(
    env,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings, index, _ = env
    settings = settings.model_copy(update={"late_events_log_per_minute": 1})
    steady = [InteractionEvent(f"s{n}", "lu", "item1", "view", T0 + n * 1000) for n in range(1100)]
    late = [
        InteractionEvent("late-1", "lu", "item2", "click", T0 - 2 * HOUR),  # beyond the hour
        InteractionEvent("late-2", "lu", "item2", "click", T0 + 10_000),  # under the 1024 ids
    ]
    before = _outcomes()
    produce_events(settings, steady)
    consumer = make_consumer(settings, index)
    drain(consumer, len(steady), close=False)
    produce_events(settings, late)
    with caplog.at_level(logging.WARNING, logger="recstream.streams.interactions"):
        drain(consumer, len(late))
    after = _outcomes()
    assert {k: after[k] - before[k] for k in after} == {
        "applied": 1100,
        "too_late": 1,
        "too_late_guard_cap": 1,
    }
    assert any("2 events dropped as too late" in r.getMessage() for r in caplog.records)
