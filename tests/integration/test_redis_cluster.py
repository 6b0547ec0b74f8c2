"""recstream on a real three-node Redis Cluster (started by infra/redis_cluster.py): ingest and
serving give what they give on one Redis, a node restarted mid-stream loses and doubles
nothing, and an ACL user's credentials reach the cluster client."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from recstream.compose import collab_versions, query_config
from recstream.consumers.recommender import Recommender
from recstream.core.collab import CollabModel
from recstream.core.index import ItemPayload
from recstream.core.settings import Settings
from recstream.core.state import BatchEffects, UserState
from recstream.infra import topics
from recstream.infra.clients import check_redis, is_cluster
from recstream.infra.errors import ServiceAuthError
from recstream.infra.redis_cluster import LocalCluster
from recstream.infra.stores.memory_index import InMemoryVectorIndex
from recstream.infra.stores.qdrant_edge_index import QdrantEdgeIndex
from recstream.infra.stores.registry import open_session_store, redis_session_store
from recstream.schemas.requests import RecommendRequest
from recstream.staging.verdicts import state_snapshot
from tests.integration.ingest_helpers import (
    T0,
    assert_same_state,
    create_topics,
    delete_namespace,
    drain,
    isolated_settings,
    make_consumer,
    open_index,
    produce_events,
    random_events,
    seed_items,
)
from tests.integration.worker_process import WorkerProcess

ITEMS = [f"item{n}" for n in range(30)]
Env = tuple[Settings, Settings]


@pytest.fixture
def env(infra: Settings, redis_cluster: LocalCluster, unique: str, tmp_path: Path) -> Iterator[Env]:
    """The same topics and index read by two deployments: one on the cluster, one (the
    reference) on the single Redis, each with its own consumer group and keys. The index is
    seeded and closed: a test opens it (`_index`), or a worker process does."""
    on_cluster = isolated_settings(redis_cluster.client_settings(), unique, tmp_path)
    on_single = on_cluster.model_copy(
        update={"redis_url": infra.redis_url, "consumer_group": f"{unique}-single"}
    )
    names = create_topics(on_cluster)
    index = open_index(on_cluster)
    seed_items(index, len(ITEMS), settings=on_cluster)
    index.close()
    yield on_cluster, on_single
    topics.delete_topics(on_cluster, names)
    delete_namespace(on_cluster)
    delete_namespace(on_single)


@contextlib.contextmanager
def _index(settings: Settings) -> Iterator[QdrantEdgeIndex]:
    index = open_index(settings)
    try:
        yield index
    finally:
        index.close()


def _users(events: list) -> list[str]:  # type: ignore[type-arg]
    return sorted({e.user_id for e in events})


def test_ingest_and_answers_on_a_cluster_are_those_of_one_redis(env: Env) -> None:
    on_cluster, on_single = env
    assert is_cluster(on_cluster) and not is_cluster(on_single)
    events = random_events(800, users=100, seed=11)  # a few items each: lists of 5 remain
    produce_events(on_cluster, events)
    users = _users(events)
    answers = {}
    with _index(on_cluster) as index:
        drain(make_consumer(on_cluster, index), len(events))
        drain(make_consumer(on_single, index), len(events))
        assert_same_state(
            state_snapshot(on_cluster, users, ITEMS, T0),
            state_snapshot(on_single, users, ITEMS, T0),
        )
        for settings in (on_cluster, on_single):
            store = open_session_store(settings)
            recommender = Recommender(index, store, None, query_config(settings))
            answers[settings.redis_address] = [
                [i.item_id for i in recommender.recommend(RecommendRequest(f"r-{u}", 5, u)).items]
                for u in users[:10]
            ]
            store.close()
    cluster_lists, single_lists = answers.values()
    assert cluster_lists == single_lists
    assert all(len(items) == 5 for items in cluster_lists)


def test_a_node_restarted_mid_stream_loses_nothing_and_doubles_nothing(
    env: Env, redis_cluster: LocalCluster
) -> None:
    on_cluster, on_single = env
    events = random_events(6000, users=200, seed=12)
    produce_events(on_cluster, events)
    with _index(on_cluster) as index:
        consumer = make_consumer(on_cluster, index)
        drain(consumer, 1000, close=False)  # the stream is under way
        node = redis_cluster.ports[1]
        restarted = threading.Thread(target=redis_cluster.restart_node, args=(node,))
        restarted.start()
        drain(consumer, len(events) - 1000, timeout_s=120)
        restarted.join(timeout=60)
        drain(make_consumer(on_single, index), len(events))  # the clean replay
    users = _users(events)
    assert_same_state(
        state_snapshot(on_cluster, users, ITEMS, T0), state_snapshot(on_single, users, ITEMS, T0)
    )


def _spread_over_every_node() -> tuple[list[str], BatchEffects]:
    """A batch whose users and items fall in every node's slots."""
    users = [f"u{n}" for n in range(60)]
    effects = BatchEffects(
        states={u: UserState(count=1, last_time=T0) for u in users},
        popularity={"a": 1.0},
        covisits={f"i{n}": {"x": 1.0} for n in range(30)},
        newest_time=T0,
        landmark=T0,
    )
    return users, effects


def test_a_write_while_a_node_is_away_waits_for_it_and_writes_each_part_once(
    redis_cluster: LocalCluster, unique: str
) -> None:
    store = redis_session_store(redis_cluster.client_settings().isolated(unique))
    users, effects = _spread_over_every_node()
    away = redis_cluster.ports[2]
    resent = REGISTRY.get_sample_value("recstream_redis_cluster_parts_resent_total") or 0.0
    redis_cluster.node(away).stop(timeout_s=30)
    back = threading.Timer(1.5, redis_cluster.restart_node, args=(away,))
    back.start()
    try:
        store.write_batch(effects, None)  # returns once the node is back and its parts written
    finally:
        back.join()
    assert (REGISTRY.get_sample_value("recstream_redis_cluster_parts_resent_total") or 0) > resent
    states = store.load_states(users)
    assert sorted(states) == sorted(users) and {s.count for s in states.values()} == {1}
    assert store.popularity() == {"a": 1.0}
    assert all(store.covisitation(f"i{n}") == {"x": 1.0} for n in range(30))
    store.delete_namespace()
    store.close()


def test_a_part_sent_again_after_its_answer_was_lost_is_written_once(
    redis_cluster: LocalCluster, unique: str
) -> None:
    """A node that ran a part and stopped before answering gets the part again: the second
    run must find the first's marker. A new write (a new id) with the same effects adds up."""
    store = redis_session_store(redis_cluster.client_settings().isolated(unique))
    _, effects = _spread_over_every_node()
    write = store.batch_payload(effects, None, set())
    store.write_by_node(write, "write-1")
    store.write_by_node(write, "write-1")  # the same write again: each part finds its marker
    assert store.popularity() == {"a": 1.0}
    assert all(store.covisitation(f"i{n}") == {"x": 1.0} for n in range(30))
    store.write_by_node(write, "write-2")
    assert store.popularity() == {"a": 2.0}
    assert all(store.covisitation(f"i{n}") == {"x": 2.0} for n in range(30))
    store.delete_namespace()
    store.close()


def test_an_acl_users_credentials_reach_the_cluster_client(infra: Settings, unique: str) -> None:
    secured = infra.model_copy(
        update={"redis_username": "recstream", "redis_password": SecretStr("cluster-s3cret")}
    )
    cluster = LocalCluster(secured.isolated(unique), (17111, 17112, 17113))
    cluster.start()
    try:
        settings = cluster.client_settings().isolated(unique)
        check_redis(settings, timeout_s=5)
        store = redis_session_store(settings)
        store.remember_response("u1", b"answer", 60)
        assert store.last_response("u1") == b"answer"
        store.close()
        anonymous = settings.model_copy(update={"redis_username": None, "redis_password": None})
        with pytest.raises(ServiceAuthError):
            check_redis(anonymous, timeout_s=5)
    finally:
        cluster.stop()


def test_collaborative_versions_stage_install_and_load_on_a_cluster(
    redis_cluster: LocalCluster, unique: str
) -> None:
    settings = redis_cluster.client_settings().isolated(unique)
    versions = collab_versions(settings)
    model = CollabModel(0, ["a", "b"], np.eye(2, dtype=np.float32), 0.1, 1.0)
    staged = versions.stage(model, None)
    index = InMemoryVectorIndex("c", 2, collab_dimension=2)
    index.upsert(
        [(ItemPayload(i, i, None, (), True, "h", 1), np.ones(2, np.float32)) for i in "ab"]
    )
    installed = versions.install_staged(index)
    assert installed is not None and installed.version == staged.version
    active = versions.active()
    assert active is not None and active.slot == installed.slot
    np.testing.assert_array_equal(versions.load(active).factors, model.factors)
    store = redis_session_store(settings)
    store.delete_namespace()
    store.close()


def test_a_worker_process_on_the_cluster_is_healthy_and_stores_what_one_redis_does(
    env: Env, tmp_path: Path
) -> None:
    on_cluster, on_single = env
    events = random_events(2000, users=80, seed=13)
    produce_events(on_cluster, events)
    worker = WorkerProcess(on_cluster, tmp_path / "worker.log", roles="interactions")
    try:
        worker.wait_for("recstream_interactions_events_total", len(events), outcome="applied")
        assert worker.health() == 200
        assert worker.metric("recstream_role_up", role="interactions") == 1.0
    finally:
        assert worker.stop() == 0
    with _index(on_single) as index:
        drain(make_consumer(on_single, index), len(events))
    users = _users(events)
    assert_same_state(
        state_snapshot(on_cluster, users, ITEMS, T0), state_snapshot(on_single, users, ITEMS, T0)
    )
