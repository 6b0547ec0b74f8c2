"""Shared fixtures.

Integration tests start the real Kafka and Redis once per session through the
project's own `recstream.infra` code (reusing them when already up) and stop only what
they started."""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from recstream.core.settings import Settings, load_settings
from recstream.infra import clients, stack, topics
from recstream.infra.redis_cluster import LocalCluster

_TESTS = Path(__file__).parent
MakeTopic = Callable[..., str]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by folder, so `-m unit` / `-m integration` select them."""
    for item in items:
        folder = Path(str(item.fspath)).relative_to(_TESTS).parts[0]
        if folder in ("unit", "integration", "contract"):
            item.add_marker(getattr(pytest.mark, folder))


@pytest.fixture(scope="session")
def infra() -> Iterator[Settings]:
    """The real local stack, started once per test session."""
    settings = load_settings()
    states = stack.up(settings)
    yield settings
    if os.environ.get("RECSTREAM_TEST_KEEP_INFRA") == "1":
        return
    gc.collect()  # destroy clients nobody holds before their broker goes away (no retry noise)
    started = [state.name for state in states if state.started_now]
    if "kafka" in started:
        from recstream.infra import kafka_server

        kafka_server.stop_kafka(settings)
    if "redis" in started:
        from recstream.infra import redis_server

        redis_server.stop_redis(settings)


@pytest.fixture
def unique() -> str:
    """A fresh name for this test's topics, groups and keys."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_topic(infra: Settings) -> Iterator[MakeTopic]:
    """Create topics with fresh names; delete them after the test."""
    created: list[str] = []

    def create(name: str, partitions: int = 1) -> str:
        topics.ensure_topics(infra, [topics.TopicSpec(name, partitions, 1)])
        created.append(name)
        return name

    yield create
    if created:
        topics.delete_topics(infra, created)


@pytest.fixture
def redis_client(infra: Settings, unique: str) -> Iterator[redis.Redis]:
    """A client on the real Redis; every key under this test's prefix is removed after it."""
    client = clients.redis_client(infra)
    yield client
    keys = list(client.scan_iter(match=f"{unique}*"))
    if keys:
        client.delete(*keys)
    client.close()


CLUSTER_PORTS = (17101, 17102, 17103)


@pytest.fixture(scope="session")
def redis_cluster(infra: Settings) -> Iterator[LocalCluster]:
    """A real three-node Redis Cluster (no replicas), started once per test session by the
    project's own launcher (infra/redis_cluster.py), with the stack's Redis credentials."""
    cluster = LocalCluster(infra, CLUSTER_PORTS)
    started = cluster.start()
    yield cluster
    if started and os.environ.get("RECSTREAM_TEST_KEEP_INFRA") != "1":
        cluster.stop()
