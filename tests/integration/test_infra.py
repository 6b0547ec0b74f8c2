"""The local stack's life cycle and its failure paths, against the real processes."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import ConfigResource, ResourceType

from recstream.core.settings import Settings, load_settings
from recstream.infra import kafka_server, redis_server, stack, topics
from recstream.infra.clients import admin_client
from recstream.infra.errors import (
    PortInUseError,
    ServiceUnreachableError,
    ToolMissingError,
    TopicMismatchError,
)
from recstream.infra.process import port_is_free
from tests.conftest import MakeTopic


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def occupied_port() -> Iterator[int]:
    """A port some other process (this test) listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def _isolated(tmp_path: Path, **env: str) -> Settings:
    """Settings for a second, never-started stack in its own state directory."""
    base = {
        "RECSTREAM_STATE_DIR": str(tmp_path),
        "RECSTREAM_KAFKA_PORT": str(_free_port()),
        "RECSTREAM_KAFKA_CONTROLLER_PORT": str(_free_port()),
        "RECSTREAM_REDIS_PORT": str(_free_port()),
    }
    return load_settings(base | env)


def test_up_twice_is_harmless_and_status_sees_both(infra: Settings) -> None:
    again = stack.up(infra)
    assert [(s.name, s.started_now, s.answering) for s in again] == [
        ("kafka", False, True),
        ("redis", False, True),
    ]
    assert all(state.pid is not None for state in stack.status(infra))


def test_kafka_port_taken_by_another_process(tmp_path: Path, occupied_port: int) -> None:
    settings = _isolated(tmp_path, RECSTREAM_KAFKA_PORT=str(occupied_port))
    with pytest.raises(PortInUseError) as caught:
        kafka_server.start_kafka(settings)
    assert f"port {occupied_port}" in str(caught.value)
    assert "RECSTREAM_KAFKA_PORT" in str(caught.value)


def test_redis_port_taken_by_another_process(tmp_path: Path, occupied_port: int) -> None:
    settings = _isolated(tmp_path, RECSTREAM_REDIS_PORT=str(occupied_port))
    with pytest.raises(PortInUseError, match="RECSTREAM_REDIS_PORT"):
        redis_server.start_redis(settings)


def test_java_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _isolated(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissingError, match="java not found on PATH: install a Java 17"):
        kafka_server.start_kafka(settings)


def test_maven_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _isolated(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissingError, match="mvn not found on PATH"):
        kafka_server.fetch_jars(settings)


def test_redis_server_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _isolated(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissingError, match="redis-server not found"):
        redis_server.start_redis(settings)


def test_kafka_not_reachable_within_the_timeout(tmp_path: Path) -> None:
    settings = _isolated(tmp_path)
    assert port_is_free(settings.kafka_port)
    with pytest.raises(ServiceUnreachableError) as caught:
        kafka_server.wait_for_kafka(settings, timeout_s=1.5)
    assert settings.bootstrap_servers in str(caught.value)
    assert "within 1.5s" in str(caught.value)


def test_topic_creation_is_idempotent_and_dlq_keeps_its_retention(
    infra: Settings, unique: str
) -> None:
    settings = infra.isolated(unique, partitions_interactions=4)
    planned = topics.planned_topics(settings)
    try:
        first = topics.ensure_topics(settings, planned)
        second = topics.ensure_topics(settings, planned)
        assert sorted(first.created) == sorted(spec.name for spec in planned)
        assert second.created == []
        assert sorted(second.existing) == sorted(first.created)
        admin = admin_client(settings)
        metadata = admin.list_topics(timeout=10).topics
        assert len(metadata[f"{unique}.interactions"].partitions) == 4
        resource = ConfigResource(ResourceType.TOPIC, f"{unique}.interactions.dlq")
        configs = admin.describe_configs([resource])[resource].result()
        assert configs["retention.ms"].value == str(settings.dlq_retention_ms)
    finally:
        topics.delete_topics(settings, [spec.name for spec in planned])


def test_partition_mismatch_is_reported_not_accepted(
    infra: Settings, unique: str, make_topic: MakeTopic
) -> None:
    name = make_topic(f"{unique}.requests", partitions=2)
    with pytest.raises(TopicMismatchError) as caught:
        topics.ensure_topics(infra, [topics.TopicSpec(name, 3, 1)])
    assert f"{name}: has 2 partitions, settings ask for 3" in str(caught.value)
