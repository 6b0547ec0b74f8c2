"""Query workers as index replicas: separate processes, each reading the vector topic into its own
embedded shard, against the real Kafka and Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from recstream.consumers.client import RecClient, new_request_id
from recstream.core.index import ItemPayload
from recstream.core.settings import Settings
from recstream.infra import topics
from recstream.infra.clients import consumer_config, kafka_config
from recstream.infra.embedder import DEFAULT_MODEL_ID
from recstream.infra.stores.item_vectors import ItemVectorCopy
from recstream.infra.topics import vector_topic
from recstream.infra.vector_log import VectorLogWriter, publish_item_vectors
from recstream.schemas.requests import RecommendRequest
from recstream.schemas.vectors import VectorRecord
from recstream.streams.replica import Checkpoint, IndexReplica
from tests.integration.ingest_helpers import DIM, create_topics, delete_namespace, isolated_settings
from tests.integration.worker_process import WorkerProcess

pytestmark = pytest.mark.integration

ITEMS = 200


def _items(first: int, count: int, updated_ms: int = 1) -> list[tuple[ItemPayload, np.ndarray]]:
    rng = np.random.default_rng(first)
    vectors = rng.normal(size=(count, DIM)).astype(np.float32)
    return [
        (ItemPayload(f"i{n}", f"Item {n}", "c", (), True, f"h{n}", updated_ms), vectors[k])
        for k, n in enumerate(range(first, first + count))
    ]


@pytest.fixture
def settings(infra: Settings, unique: str, tmp_path: Path) -> Iterator[Settings]:
    settings = isolated_settings(infra, unique, tmp_path, embed_threads=1)
    names = create_topics(settings)
    publish_item_vectors(settings, _items(0, ITEMS), DEFAULT_MODEL_ID)
    yield settings
    topics.delete_topics(settings, names)
    delete_namespace(settings)


def _replica(settings: Settings, tmp_path: Path, name: str) -> WorkerProcess:
    own = settings.model_copy(update={"qdrant_path": tmp_path / name})
    return WorkerProcess(own, tmp_path / f"{name}.log", roles="query")


def _health(replica: WorkerProcess) -> int:
    try:
        return replica.health()
    except OSError:  # not listening yet
        return 0


def _ready(*replicas: WorkerProcess, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    for replica in replicas:
        while _health(replica) != 200:
            assert replica.process.poll() is None, replica.log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, replica.log_path.read_text()[-3000:]
            time.sleep(0.3)


def _similar(client: RecClient, item: str, k: int = 10, partition: int | None = None) -> list[str]:
    request = RecommendRequest(new_request_id(), k, item_id=item)
    response = client.ask(request, partition=partition)
    assert response.status == "ok", response
    return [entry.item_id for entry in response.items]


def _answers(
    client: RecClient, settings: Settings, a: WorkerProcess, b: WorkerProcess
) -> set[tuple[str, ...]]:
    """The distinct answers to "more like i0" sent to every request partition, round after
    round until both replicas have answered some (the group may still be assigning them)."""
    metric = "recstream_query_requests_total"
    before = (a.metric(metric, status="ok"), b.metric(metric, status="ok"))
    answers: set[tuple[str, ...]] = set()
    deadline = time.monotonic() + 60
    while a.metric(metric, status="ok") == before[0] or b.metric(metric, status="ok") == before[1]:
        assert time.monotonic() < deadline, "the requests never reached both replicas"
        for partition in range(settings.partitions_requests):
            answers.add(tuple(_similar(client, "i0", partition=partition)))
    return answers


def test_two_replicas_answer_from_their_own_shards_with_the_same_lists_and_follow_the_log(
    settings: Settings, tmp_path: Path
) -> None:
    a, b = _replica(settings, tmp_path, "a"), _replica(settings, tmp_path, "b")
    try:
        _ready(a, b)
        for replica in (a, b):
            assert replica.metric("recstream_replica_records_total", outcome="applied") == ITEMS
        with RecClient(settings, timeout_s=30) as client:
            [before] = _answers(client, settings, a, b)
            assert len(before) == 10 and "i0" not in before

            # A new item right next to i0 reaches both, and is served by both.
            near = _items(0, 1)[0][1] + np.float32(1e-3)
            new = ItemPayload("i-new", "New", "c", (), True, "hn", 2)
            publish_item_vectors(settings, [(new, near)], DEFAULT_MODEL_ID)
            for replica in (a, b):
                replica.wait_for("recstream_replica_records_total", ITEMS + 1, outcome="applied")
            [with_new] = _answers(client, settings, a, b)
            assert with_new[0] == "i-new"

            # Its delete (the catalog processor's tombstone record) removes it everywhere.
            log = VectorLogWriter(kafka_config(settings), vector_topic(settings))
            log.publish([VectorRecord(new.tombstone(3), near)])
            log.flush()
            for replica in (a, b):
                replica.wait_for("recstream_replica_records_total", ITEMS + 2, outcome="applied")
            assert _answers(client, settings, a, b) == {before}
    finally:
        assert a.stop() == 0
        assert b.stop() == 0


def test_a_killed_replica_resumes_from_its_checkpoint_without_reading_the_topic_again(
    settings: Settings, tmp_path: Path
) -> None:
    replica = _replica(settings, tmp_path, "a")
    _ready(replica)
    replica.kill()  # SIGKILL: the checkpoint written once it had caught up must be enough
    publish_item_vectors(settings, _items(ITEMS, 5), DEFAULT_MODEL_ID)
    again = _replica(settings, tmp_path, "a")
    try:
        _ready(again)
        again.wait_for("recstream_replica_records_total", 5, outcome="applied")
        seen = sum(
            again.metric("recstream_replica_records_total", outcome=outcome)
            for outcome in ("applied", "unchanged", "stale", "superseded")
        )
        assert seen == 5  # only what came after the checkpoint
        assert "from its checkpoint" in again.log_path.read_text()
        with RecClient(settings, timeout_s=30) as client:
            # Items from before the kill (kept by the shard) and after it (read now) are known.
            assert len(_similar(client, "i0")) == len(_similar(client, "i204")) == 10
    finally:
        assert again.stop() == 0


class _FailingOnce(ItemVectorCopy):
    """A copy whose first write fails, as an index outage would."""

    def __init__(self) -> None:
        super().__init__(DEFAULT_MODEL_ID)
        self.failed = False

    def upsert(self, items: Sequence[tuple[ItemPayload, np.ndarray]]) -> None:
        if not self.failed:
            self.failed = True
            raise ConnectionError("index away")
        super().upsert(items)


def test_a_batch_the_copy_fails_to_take_is_read_again_not_skipped(settings: Settings) -> None:
    store = _FailingOnce()
    replica = IndexReplica(
        consumer_config(settings, f"{settings.consumer_group}-replica"),
        vector_topic(settings),
        store,
        Checkpoint(None),
        name="test",
        tombstone_retention_ms=settings.tombstone_retention_ms,
    )
    thread = threading.Thread(target=replica.run)
    thread.start()
    try:
        assert replica.wait_ready(60)
    finally:
        replica.stop()
        thread.join(30)
    assert store.failed
    assert store.count() == ITEMS  # every item of the batch that failed came again
    retries = REGISTRY.get_sample_value("recstream_replica_retries_total", {"replica": "test"})
    assert retries == 1
