"""`recstream worker` as a real process: catalog events become points in embedded Qdrant, re-sent
unchanged items are not embedded again, and a worker killed mid-stream resumes to the same state."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from recstream.core.attributes import AttributeCondition
from recstream.core.index import SearchFilter
from recstream.core.settings import Settings
from recstream.infra import topics
from recstream.infra.clients import admin_client, kafka_config
from recstream.infra.dlq import DETAIL_HEADER, TRUNCATED_HEADER
from recstream.infra.topics import dlq_topic
from recstream.schemas.events import CatalogEvent, InteractionEvent
from recstream.staging.verdicts import state_snapshot
from tests.integration.ingest_helpers import (
    T0,
    assert_same_state,
    create_topics,
    delete_namespace,
    drain,
    isolated_settings,
    large_record_producer,
    make_consumer,
    near_limit_record,
    open_index,
    produce,
    produce_events,
    random_events,
    read_dead_letters,
    seed_items,
)
from tests.integration.worker_process import WorkerProcess

NOW = int(time.time() * 1000)


@pytest.fixture
def settings(infra: Settings, unique: str, tmp_path: Path) -> Iterator[Settings]:
    isolated = isolated_settings(infra, unique, tmp_path)
    names = create_topics(isolated)
    yield isolated
    topics.delete_topics(isolated, names)
    delete_namespace(isolated)


def _catalog(n: int, t: int, **changes: object) -> CatalogEvent:
    fields: dict[str, object] = {
        "title": f"Movie {n}",
        "category": "Drama" if n % 2 else "Comedy",
        "tags": (f"tag{n % 3}",),
        "description": f"A film about {n}.",
    }
    fields.update(changes)
    return CatalogEvent(f"c{n}-{t}", f"m{n}", "upsert", t, **fields)  # type: ignore[arg-type]


def test_catalog_events_become_points_and_unchanged_items_are_not_embedded_again(
    settings: Settings, tmp_path: Path
) -> None:
    items = [_catalog(n, NOW) for n in range(12)]
    no_title = {
        "schema_version": 1,
        "event_id": "x",
        "item_id": "m99",
        "op": "upsert",
        "event_time": NOW,
    }
    bad = [(b"m-bad", b"{broken"), (b"m-bad", orjson.dumps(no_title))]
    produce(
        settings, settings.topic_catalog, [(e.item_id.encode(), e.to_json()) for e in items] + bad
    )
    worker = WorkerProcess(settings, tmp_path / "worker1.log", roles="catalog")
    try:
        worker.wait_for("recstream_catalog_events_total", 12, outcome="embedded")
        worker.wait_for("recstream_catalog_events_total", 2, outcome="dead_lettered")
        assert worker.metric("recstream_catalog_events_total", outcome="embedded") == 12
        assert worker.health() == 200  # Kafka, Redis and the index all answer
    finally:
        assert worker.stop() == 0
    # faust's data directory is under the state directory, not in the one it was started from.
    assert (settings.state_dir / "faust" / settings.consumer_group / "v1").is_dir()
    assert not (Path.cwd() / f"{settings.consumer_group}-data").exists()
    index = open_index(settings)
    try:
        stored = index.retrieve([e.item_id for e in items])
        assert set(stored) == {e.item_id for e in items}
        payload = stored["m3"].payload
        assert (payload.title, payload.category, payload.tags, payload.available) == (
            "Movie 3",
            "Drama",
            ("tag0",),
            True,
        )
        assert payload.updated_ms == NOW
        hits = index.search(stored["m3"].vector, 1, flt=_no_filter())  # type: ignore[arg-type]
        assert hits[0].payload.item_id == "m3"
    finally:
        index.close()

    # Re-sent unchanged (newer event time), one hidden, one deleted: nothing is embedded again.
    resent = [_catalog(n, NOW + 1) for n in range(10)] + [_catalog(10, NOW + 1, available=False)]
    resent.append(CatalogEvent("del-11", "m11", "delete", NOW + 1))
    produce(settings, settings.topic_catalog, [(e.item_id.encode(), e.to_json()) for e in resent])
    again = WorkerProcess(settings, tmp_path / "worker2.log", roles="catalog")
    try:
        again.wait_for("recstream_catalog_events_total", 10, outcome="unchanged")
        again.wait_for("recstream_catalog_events_total", 1, outcome="deleted")
        assert again.metric("recstream_catalog_events_total", outcome="embedded") == 0
        assert again.metric("recstream_catalog_events_total", outcome="payload_updated") == 1
    finally:
        assert again.stop() == 0
    index = open_index(settings)
    try:
        assert index.count() == 11
        assert index.retrieve(["m10"])["m10"].payload.available is False
    finally:
        index.close()


def _no_filter() -> SearchFilter:
    return SearchFilter(available_only=False)


def _committed_everything(settings: Settings) -> bool:
    group = f"{settings.consumer_group}-interactions"
    consumer = Consumer(kafka_config(settings) | {"group.id": group})
    try:
        parts = [
            TopicPartition(settings.topic_interactions, p)
            for p in range(settings.partitions_interactions)
        ]
        committed = consumer.committed(parts, timeout=10)
        for part in committed:
            _, high = consumer.get_watermark_offsets(part, timeout=10)
            if part.offset < high:
                return False
        return True
    finally:
        consumer.close()


def test_a_worker_killed_mid_stream_resumes_to_the_state_of_a_clean_run(
    settings: Settings, infra: Settings, unique: str, tmp_path: Path
) -> None:
    index = open_index(settings)
    seed_items(index, 30, settings=settings)
    index.close()  # the worker process opens the shard itself
    events = random_events(20_000, users=200, seed=9)
    produce_events(settings, events)
    worker = WorkerProcess(settings, tmp_path / "killed.log", roles="interactions")
    worker.wait_for("recstream_interactions_events_total", 2_000, outcome="applied")
    worker.kill()  # SIGKILL: no clean shutdown, no final commit
    restarted = WorkerProcess(settings, tmp_path / "restarted.log", roles="interactions")
    try:
        _wait_committed(settings)
    finally:
        assert restarted.stop() == 0

    _assert_same_as_a_clean_run(settings, infra, unique, tmp_path, events)


def _wait_committed(settings: Settings) -> None:
    deadline = time.monotonic() + 120
    while not _committed_everything(settings):
        assert time.monotonic() < deadline, "worker did not catch up"
        time.sleep(0.5)


def _assert_same_as_a_clean_run(
    settings: Settings,
    infra: Settings,
    unique: str,
    tmp_path: Path,
    events: list[InteractionEvent],
) -> None:
    """The state `settings` hold equals that of the same events applied, with the items in
    place and nothing going wrong, in a fresh namespace."""
    clean = isolated_settings(infra, unique + "clean", tmp_path, qdrant_path=settings.qdrant_path)
    names = create_topics(clean)
    index = open_index(clean)
    try:
        produce_events(clean, events)
        drain(make_consumer(clean, index), len(events))
        users = sorted({e.user_id for e in events})
        items = [f"item{n}" for n in range(30)]
        assert_same_state(
            state_snapshot(settings, users, items, T0), state_snapshot(clean, users, items, T0)
        )
    finally:
        index.close()
        topics.delete_topics(clean, names)
        delete_namespace(clean)


def test_processes_joining_and_leaving_the_group_neither_lose_nor_double_apply_events(
    settings: Settings, infra: Settings, unique: str, tmp_path: Path
) -> None:
    """Two interaction processes: the second joins mid-stream, the first leaves (SIGTERM), each
    a rebalance that moves partitions (and their waiting records) between them."""
    index = open_index(settings)
    seed_items(index, 30, settings=settings)
    index.close()
    events = random_events(12_000, users=200, seed=13)
    parts = [events[:4_000], events[4_000:8_000], events[8_000:]]
    produce_events(settings, parts[0])
    first = WorkerProcess(settings, tmp_path / "first.log", roles="interactions")
    second: WorkerProcess | None = None
    try:
        first.wait_for("recstream_interactions_events_total", 100, outcome="applied")
        second = WorkerProcess(settings, tmp_path / "second.log", roles="interactions")
        second.wait_for("recstream_replica_ready", 1, replica="items")
        produce_events(settings, parts[1])
        second.wait_for("recstream_interactions_events_total", 1, outcome="applied")
        assert first.stop() == 0
        produce_events(settings, parts[2])
        _wait_committed(settings)
    finally:
        first.kill()
        if second is not None:
            assert second.stop() == 0
    _assert_same_as_a_clean_run(settings, infra, unique, tmp_path, events)


def test_events_before_their_items_end_in_the_state_of_events_after_them(
    infra: Settings, unique: str, tmp_path: Path
) -> None:
    settings = isolated_settings(infra, unique, tmp_path)
    names = create_topics(settings)
    events = random_events(3_000, users=100, seed=11)
    produce_events(settings, events)  # before any item exists
    worker = WorkerProcess(settings, tmp_path / "worker.log", roles="interactions")
    try:
        worker.wait_for("recstream_interactions_waiting_events", 1)
        assert not _committed_everything(settings)  # held events are never committed past
        index = open_index(settings)
        seed_items(index, 30, settings=settings)  # the items come now, through the vector topic
        index.close()
        _wait_committed(settings)
        assert worker.metric("recstream_interactions_waiting_total", outcome="released") > 0
        assert worker.metric("recstream_interactions_waiting_total", outcome="expired") == 0
        assert worker.metric("recstream_interactions_waiting_events") == 0
    finally:
        assert worker.stop() == 0
    try:
        _assert_same_as_a_clean_run(settings, infra, unique, tmp_path, events)
    finally:
        topics.delete_topics(settings, names)
        delete_namespace(settings)


def test_a_catalog_record_near_the_size_limit_is_dead_lettered_and_the_role_goes_on(
    settings: Settings, tmp_path: Path
) -> None:
    huge = near_limit_record()
    producer = large_record_producer(settings)
    producer.produce(settings.topic_catalog, huge, key=b"m-huge", partition=0)
    assert producer.flush(10) == 0
    after = [_catalog(n, NOW) for n in range(3)]
    produce(settings, settings.topic_catalog, [(e.item_id.encode(), e.to_json()) for e in after])
    worker = WorkerProcess(settings, tmp_path / "worker.log", roles="catalog")
    try:
        worker.wait_for("recstream_catalog_events_total", 3, outcome="embedded")
        assert worker.health() == 200
    finally:
        assert worker.stop() == 0
    [letter] = read_dead_letters(settings, dlq_topic(settings.topic_catalog), 1)
    assert (letter.reason, letter.key) == ("oversized", b"m-huge")
    assert letter.headers[TRUNCATED_HEADER] == str(len(huge)).encode()


def test_filterable_attributes_are_typed_indexed_and_a_bad_value_is_dead_lettered(
    infra: Settings, unique: str, tmp_path: Path
) -> None:
    """RECSTREAM_FILTER_ATTRIBUTES reaches the catalog role: its index gets the payload
    indexes, numbers from CSV text are stored as numbers, a word where a number is declared
    is dead-lettered with the reason, and the rest of the batch is applied."""
    settings = isolated_settings(
        infra, unique, tmp_path, filter_attributes={"year": "number", "studio": "keyword"}
    )
    names = create_topics(settings)
    try:
        items = [
            _catalog(0, NOW, attributes={"year": "1999", "studio": 7}),
            _catalog(1, NOW, attributes={"year": 2005}),
            _catalog(2, NOW, attributes={"year": "soon"}),
        ]
        produce(
            settings, settings.topic_catalog, [(e.item_id.encode(), e.to_json()) for e in items]
        )
        worker = WorkerProcess(settings, tmp_path / "worker.log", roles="catalog")
        try:
            worker.wait_for("recstream_catalog_events_total", 2, outcome="embedded")
            worker.wait_for("recstream_catalog_events_total", 1, outcome="dead_lettered")
        finally:
            assert worker.stop() == 0
        [letter] = read_dead_letters(settings, dlq_topic(settings.topic_catalog), 1)
        assert (letter.reason, letter.key) == ("schema_violation", b"m2")
        assert b"'year' is a number, not 'soon'" in letter.headers[DETAIL_HEADER]
        index = open_index(settings)
        try:
            indexes = index.payload_index_types()
            assert (indexes["attributes.year"], indexes["attributes.studio"]) == (
                "float",
                "keyword",
            )
            stored = index.retrieve(["m0", "m1", "m2"])
            assert set(stored) == {"m0", "m1"}
            assert stored["m0"].payload.attributes == {"year": 1999, "studio": "7"}
            recent = SearchFilter(attributes=(AttributeCondition("year", gte=2000),))
            hits = index.search(stored["m0"].vector, 10, recent)  # type: ignore[arg-type]
            assert [h.payload.item_id for h in hits] == ["m1"]
        finally:
            index.close()
    finally:
        topics.delete_topics(settings, names)


def test_every_group_member_of_a_worker_carries_its_instance_id(
    settings: Settings, tmp_path: Path
) -> None:
    """Static membership reaches every consumer: confluent-kafka's two and faust's."""
    instance = f"{settings.consumer_group}-w1"
    configured = settings.model_copy(update={"kafka_instance_id": instance})
    worker = WorkerProcess(configured, tmp_path / "worker.log", roles="catalog,interactions,query")
    groups = [settings.consumer_group] + [
        f"{settings.consumer_group}-{role}" for role in ("interactions", "query")
    ]
    try:
        deadline = time.monotonic() + 120
        wanted = {g: [instance] for g in groups}
        while (members := {g: _members_when_known(settings, g) for g in groups}) != wanted:
            assert time.monotonic() < deadline, members
            time.sleep(0.5)
        # Its one start line says what runs where (logged once faust runs the app's tasks,
        # which may be after the groups are joined).
        while not (starts := _start_lines(worker)):
            assert time.monotonic() < deadline, worker.log_path.read_text()[-3000:]
            time.sleep(0.5)
    finally:
        assert worker.stop() == 0
    [start] = starts
    assert "roles catalog, interactions, query" in start
    assert f"group {settings.consumer_group}-interactions" in start
    assert f"member {instance}" in start and f":{worker.metrics_port}/metrics" in start


def _start_lines(worker: WorkerProcess) -> list[str]:
    return [line for line in worker.log_path.read_text().splitlines() if "roles " in line]


def _members_when_known(settings: Settings, group: str) -> list[str | None] | None:
    """The group's members' instance ids; None while the coordinator is still loading."""
    try:
        return _instance_ids(settings, [group])[group]
    except KafkaException:
        return None


def _instance_ids(settings: Settings, groups: list[str]) -> dict[str, list[str | None]]:
    admin = admin_client(settings)  # held until the futures are done: they need it
    described = admin.describe_consumer_groups(groups, request_timeout=10)
    return {
        group: [member.group_instance_id for member in future.result().members]
        for group, future in described.items()
    }


def test_a_worker_whose_consumer_is_fenced_exits_for_its_process_manager_to_restart(
    settings: Settings, tmp_path: Path
) -> None:
    """A fatal client error (here: a second member with the same static instance id fences the
    first) leaves the consumer unusable for good; the worker must not live on with a dead role
    but exit 1, so systemd, Kubernetes or `recstream staging`'s supervisor start a fresh one."""
    instance = f"{settings.consumer_group}-same"
    same = settings.model_copy(update={"kafka_instance_id": instance})
    group = f"{settings.consumer_group}-interactions"
    first = WorkerProcess(same, tmp_path / "first.log", roles="interactions")
    second = None
    try:
        deadline = time.monotonic() + 120
        while _members_when_known(settings, group) != [instance]:
            assert time.monotonic() < deadline and first.process.poll() is None
            time.sleep(0.5)
        second = WorkerProcess(same, tmp_path / "second.log", roles="interactions")
        assert first.process.wait(timeout=120) == 1
        log = first.log_path.read_text()
        assert "role interactions died" in log and "Static consumer fenced" in log
    finally:
        first.stop()
        if second is not None:
            second.stop()
