"""The collaborative space end to end against the real Kafka and Redis: `recstream train` reads
the interactions topic and stages a version, which is installed into a collaborative slot of the
index (by the process holding it, or by a running worker); the interaction processor folds users
in against it; the query worker's answers follow a new interaction through the topics; versions
switch atomically, too little data is refused, a version of the wrong dimension is rejected."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import orjson
import pytest
from prometheus_client import REGISTRY

from recstream.compose import collab_versions, interaction_consumer, query_config
from recstream.consumers.client import RecClient
from recstream.consumers.query_worker import QueryWorker
from recstream.consumers.ranking import RankingWeights
from recstream.consumers.recommender import Recommender
from recstream.core.collab import CollabModel, StateCollab, VersionInfo
from recstream.core.errors import RecstreamError
from recstream.core.settings import Settings
from recstream.infra import topics
from recstream.infra.clients import consumer_config, kafka_config, redis_client
from recstream.infra.dlq import DeadLetterWriter
from recstream.infra.errors import CollabRejectedError
from recstream.infra.stores.collab_store import CollabReader
from recstream.infra.stores.keys import KeySpace
from recstream.infra.stores.qdrant_edge_index import QdrantEdgeIndex
from recstream.infra.stores.registry import redis_session_store
from recstream.schemas.events import InteractionEvent
from recstream.train import TrainReport, describe_versions, train
from tests.integration.ingest_helpers import (
    create_topics,
    delete_namespace,
    drain,
    isolated_settings,
    open_index,
    produce_events,
    seed_items,
)
from tests.integration.worker_process import WorkerProcess

T0 = int(time.time() * 1000) - 10 * 24 * 3600 * 1000


@dataclass
class Env:
    settings: Settings
    index: QdrantEdgeIndex
    events: list[InteractionEvent]


def _taste_events() -> list[InteractionEvent]:
    """Two tastes: users 0-19 like items 0-9, users 20-39 like items 10-19."""
    rng = random.Random(3)
    events = []
    for user in range(40):
        pool = range(10) if user < 20 else range(10, 20)
        for n, item in enumerate(rng.sample(list(pool), 6)):
            events.append(
                InteractionEvent(
                    f"t{user}-{item}", f"user{user}", f"item{item}", "like", T0 + user * 100 + n
                )
            )
    return events


@pytest.fixture
def env(infra: Settings, unique: str, tmp_path: Path) -> Iterator[Env]:
    settings = isolated_settings(
        infra,
        unique,
        tmp_path,
        collab_min_events=50,
        collab_min_users=10,
        collab_min_items=10,
        collab_factors=4,
        collab_refresh_s=0.05,
        state_dir=tmp_path / "state",
    )
    names = create_topics(settings)
    index = open_index(settings)
    seed_items(index, 30, settings=settings)
    events = _taste_events()
    produce_events(settings, events)
    state = Env(settings, index, events)
    yield state
    state.index.close()  # a test may have reopened it
    topics.delete_topics(settings, names)
    delete_namespace(settings)


def _train(env: Env, settings: Settings | None = None) -> TrainReport:
    """Train and install into the test's index, as the worker's train role does (after the
    pause an install waits for: readers leave the free slot within two refresh periods)."""
    time.sleep(2 * env.settings.collab_refresh_s + 0.01)
    report = train(settings or env.settings, env.index)
    assert report.version.slot is not None and report.status == "installed"
    return report


def _factors_in_slot(env: Env, model: CollabModel, slot: int) -> None:
    """The slot holds exactly this model's factors."""
    stored = env.index.read_collab(slot, list(model.items))
    assert set(stored) == set(model.items)
    for item in model.items:
        np.testing.assert_allclose(stored[item], model.factors[model.row(item) or 0], rtol=1e-6)


def _installs(outcome: str) -> float:
    """This process's count of install attempts with that outcome."""
    return REGISTRY.get_sample_value("recstream_collab_installs_total", {"outcome": outcome}) or 0.0


def _apply(env: Env, count: int) -> None:
    """Run the interaction processor (with its collab reader) over `count` new records."""
    reader = CollabReader(collab_versions(env.settings), env.settings.collab_refresh_s)
    dead = DeadLetterWriter(kafka_config(env.settings))
    store = redis_session_store(env.settings)
    drain(interaction_consumer(env.settings, env.index, store, dead, reader), count)
    store.close()


def test_training_publishes_and_the_processor_folds_users_in(env: Env) -> None:
    report = _train(env)
    assert report.version.version == 1 and report.version.drift is None
    assert (report.users, report.items, report.events) == (40, 20, len(env.events))
    assert (env.settings.state_dir / "collab" / "train-v1.json").exists()
    _apply(env, len(env.events))
    versions = collab_versions(env.settings)
    info = versions.active()
    assert info is not None
    model = versions.load(info)
    assert info.slot is not None and model.slot == info.slot
    _factors_in_slot(env, model, info.slot)
    store = redis_session_store(env.settings)
    state = store.load_states(["user3"])["user3"]
    store.close()
    assert state.collab_version == 1 and state.collab_vector is not None
    np.testing.assert_allclose(state.collab_vector, model.fold_in(state.collab_items), rtol=1e-5)
    # the folded-in user prefers items of their own taste
    scores = model.scores(state.collab_vector)
    own = np.mean([scores[model.row(f"item{i}") or 0] for i in range(1, 10)])
    other = np.mean([scores[model.row(f"item{i}") or 0] for i in range(10, 20)])
    assert own > other


def test_retraining_on_unchanged_data_keeps_neighbours_in_the_other_slot(env: Env) -> None:
    first = _train(env).version
    versions = collab_versions(env.settings)
    first_model = versions.load(first)
    produce_events(env.settings, env.events[:100])  # a replay: the same event ids again
    report = _train(env)
    second = report.version
    assert report.events == len(env.events)  # the replayed events counted once
    assert second.version == first.version + 1
    assert second.drift is not None and second.drift < 0.05
    assert versions.active() == second
    assert first.slot is not None and second.slot is not None and second.slot != first.slot
    _factors_in_slot(env, versions.load(second), second.slot)
    _factors_in_slot(env, first_model, first.slot)  # the previous version untouched beside it
    with pytest.raises(RecstreamError, match="no stored factors"):
        versions.load(first)  # its Redis copy is gone after the switch
    status = describe_versions(versions)
    assert f"active: version {second.version}, slot {second.slot}, 20 items" in status
    assert "staged: none" in status
    third = _train(env).version  # back into the first slot, replacing the first version whole
    assert third.slot == first.slot
    _factors_in_slot(env, versions.load(third), first.slot)


def test_too_little_data_is_refused_and_the_version_stays(env: Env) -> None:
    current = _train(env).version
    strict = env.settings.model_copy(update={"collab_min_events": 10**6})
    with pytest.raises(RecstreamError, match=rf"too little data.*version {current.version} stays"):
        train(strict)
    assert collab_versions(env.settings).active() == current


def test_a_failed_install_leaves_readers_on_the_old_version(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    current = _train(env).version
    versions = collab_versions(env.settings)
    model = versions.load(current)
    write = env.index.write_collab

    def half_then_fail(slot: int, factors: dict[str, np.ndarray]) -> int:
        write(slot, dict(list(factors.items())[: len(factors) // 2]))
        raise OSError("disk full")  # fault injection: the index write fails midway

    monkeypatch.setattr(env.index, "write_collab", half_then_fail)
    time.sleep(2 * env.settings.collab_refresh_s)
    failed = _installs("failed")
    with pytest.raises(OSError, match="disk full"):
        train(env.settings, env.index)
    assert _installs("failed") == failed + 1
    assert versions.active() == current
    assert current.slot is not None
    _factors_in_slot(env, model, current.slot)  # the active slot never touched
    staged = versions.staged()
    assert staged is not None and staged.version == current.version + 1  # kept for a retry
    monkeypatch.setattr(env.index, "write_collab", write)
    retried = versions.install_staged(env.index)
    assert retried is not None and retried.version == staged.version
    assert versions.active() == retried and versions.staged() is None


def test_a_version_of_the_wrong_dimension_is_rejected_and_readers_keep_theirs(env: Env) -> None:
    current = _train(env).version
    versions = collab_versions(env.settings)
    reader = CollabReader(versions, refresh_s=0.01)
    assert reader.current() is not None
    model = versions.load(current)
    wider = CollabModel(0, model.items, np.hstack([model.factors, model.factors]), 0.1, 1.0)
    staged = versions.stage(wider, None)  # 8 factors for a collection made with 4
    time.sleep(2 * env.settings.collab_refresh_s)
    rejected = _installs("rejected")
    with pytest.raises(CollabRejectedError, match=rf"8 factors.*version {current.version} stays"):
        versions.install_staged(env.index)
    assert _installs("rejected") == rejected + 1  # operators see it
    assert versions.active() == current and versions.staged() is None
    # A pointer whose stored factors do not have the dimension it declares is refused on load.
    lying = replace(current, version=staged.version, dimension=current.dimension + 2)
    client = redis_client(env.settings)
    keys = KeySpace(env.settings.redis_namespace)
    client.set(keys.collab_items(lying.version), orjson.dumps(list(model.items)))
    client.set(keys.collab_factors(lying.version), model.factors.tobytes())
    client.set(keys.collab_active(), orjson.dumps(asdict(lying)))
    client.close()
    with pytest.raises(RecstreamError, match="rejected"):
        versions.load(lying)
    time.sleep(0.02)
    kept = reader.current()
    assert kept is not None and kept.version == current.version


def test_the_switch_is_atomic_under_concurrent_reads(env: Env) -> None:
    _train(env)
    versions = collab_versions(env.settings)
    reader = CollabReader(versions, refresh_s=0.0)
    probe = [f"item{i}" for i in range(20)]
    seen: set[int] = set()
    mixed: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:  # what a request does: one model, its slot in the index
        while not stop.is_set():
            try:
                model = reader.current()
                assert model is not None and model.slot is not None
                stored = env.index.read_collab(model.slot, probe)
                rows = [model.row(i) or 0 for i in probe]
                if not np.allclose(np.stack([stored[i] for i in probe]), model.factors[rows]):
                    mixed.append(model.version)
                seen.add(model.version)
            except BaseException as error:
                errors.append(error)

    thread = threading.Thread(target=read)
    thread.start()
    for alpha in (2.0, 4.0, 8.0):  # each version's factors differ: a mix would show
        _train(env, env.settings.model_copy(update={"collab_alpha": alpha}))
    time.sleep(0.2)
    stop.set()
    thread.join(10)
    assert not errors and not mixed
    assert len(seen) >= 2 and max(seen) == 4  # the reader followed the switches to the newest


def test_a_new_interaction_changes_the_next_collab_recommendation(env: Env) -> None:
    _train(env)
    _apply(env, len(env.events))
    store = redis_session_store(env.settings)
    reader = CollabReader(collab_versions(env.settings), 0.05)
    collab_only = replace(
        query_config(env.settings), weights=RankingWeights(0.0, 0.0, 0.0, 1.0), covis_seeds=0
    )
    recommender = Recommender(env.index, store, None, collab_only, collab=StateCollab(reader, 1))
    worker = QueryWorker(
        recommender,
        consumer_config(env.settings, f"{env.settings.consumer_group}-query"),
        kafka_config(env.settings),
        env.settings.topic_requests,
        env.settings.topic_responses,
        DeadLetterWriter(kafka_config(env.settings)),
        max_queue_ms=5000,
        threads=env.settings.query_threads,
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    client = RecClient(env.settings, timeout_s=20)
    try:
        before = [i.item_id for i in client.recommend("user0", k=5, diversity=1.0).items]
        # user0 (taste: items 0-9) now loves five items of the other taste
        fresh = [
            InteractionEvent(f"new-{i}", "user0", f"item{i}", "purchase", T0 + 10**6 + i)
            for i in range(10, 15)
        ]
        for event in fresh:
            client.track(event)
        client.flush()
        _apply(env, len(fresh))
        after = [i.item_id for i in client.recommend("user0", k=5, diversity=1.0).items]
    finally:
        client.close()
        worker.stop()
        thread.join(10)
        store.close()
    assert before != after
    taste = lambda ids: sum(int(i[4:]) >= 10 for i in ids)  # noqa: E731
    assert taste(after) > taste(before)  # the list moved towards the new taste


def test_the_workers_train_role_publishes_on_its_schedule(env: Env, tmp_path: Path) -> None:
    settings = env.settings.model_copy(update={"collab_train_every_s": 1.0})
    env.index.close()  # the worker process opens the embedded index itself
    worker = WorkerProcess(settings, tmp_path / "worker.log", roles="train")
    try:
        deadline = time.monotonic() + 120
        active = None
        while active is None and time.monotonic() < deadline:
            assert worker.process.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            active = collab_versions(settings).active()
            time.sleep(0.5)
        assert active is not None, (tmp_path / "worker.log").read_text()[-3000:]
        assert active.items == 20
    finally:
        assert worker.stop() == 0
    env.index = open_index(settings)  # for the fixture's teardown


def test_a_running_replica_writes_into_its_own_slot_what_a_separate_train_run_activates(
    env: Env, tmp_path: Path
) -> None:
    env.index.close()  # the worker process opens the embedded index itself
    worker = WorkerProcess(env.settings, tmp_path / "worker.log", roles="query")
    try:
        worker.wait_for("recstream_replica_ready", 1, replica="index")
        report = train(env.settings)  # embedded replicas: switching the pointer installs
        assert report.status == "installed" and report.version.slot is None
        assert collab_versions(env.settings).active() == report.version
        worker.wait_for("recstream_collab_installs_total", 1, outcome="installed")
    finally:
        assert worker.stop() == 0
    env.index = open_index(env.settings)
    installed = collab_versions(env.settings).load(report.version)
    _factors_in_slot(env, installed, 0)  # a replica's first version goes to its slot 0


def test_a_pointer_from_the_sibling_collection_days_is_skipped_then_replaced(env: Env) -> None:
    """Before session 10 a version lived in its own collection and the pointer named it."""
    old = {"version": 7, "collection": "collab__als-v7__4", "dimension": 4, "regularization": 0.1}
    old |= {"alpha": 1.0, "items": 20, "trained_ms": 1, "drift": None}
    client = redis_client(env.settings)
    client.set(KeySpace(env.settings.redis_namespace).collab_active(), orjson.dumps(old))
    client.close()
    versions = collab_versions(env.settings)
    active = versions.active()
    assert active is not None and active.version == 7 and active.slot is None
    assert CollabReader(versions, 0.0).current() is None  # nothing loadable: content only
    installed = _train(env).version
    assert versions.active() == installed and installed.slot is not None


def test_a_version_staged_during_an_install_stays_staged(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A training run that stages version 2 while a worker installs version 1."""
    versions = collab_versions(env.settings)
    first = versions.stage(
        CollabModel(0, [f"item{i}" for i in range(20)], _random(4), 0.1, 1.0), None
    )
    write = env.index.write_collab
    newer: list[VersionInfo] = []

    def write_while_training(slot: int, factors: dict[str, np.ndarray]) -> int:
        model = CollabModel(0, [f"item{i}" for i in range(20)], _random(4, seed=2), 0.1, 1.0)
        newer.append(versions.stage(model, None))
        return write(slot, factors)

    monkeypatch.setattr(env.index, "write_collab", write_while_training)
    installed = versions.install_staged(env.index)
    assert installed is not None and installed.version == first.version
    assert versions.staged() == newer[0]  # not lost with the first one's pointer
    assert versions.load(installed).items == tuple(f"item{i}" for i in range(20))  # data kept
    monkeypatch.setattr(env.index, "write_collab", write)
    time.sleep(2 * env.settings.collab_refresh_s)
    assert (versions.install_staged(env.index) or first).version == newer[0].version


def _random(dimension: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(20, dimension)).astype(np.float32)
