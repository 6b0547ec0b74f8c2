"""Produce and consume through the real broker with confluent-kafka and with a faust agent."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer

from recstream.core.settings import Settings
from recstream.infra.clients import kafka_config
from tests.conftest import MakeTopic

FAUST_APP = Path(__file__).with_name("faust_echo_app.py")


def _produce(settings: Settings, topic: str, values: list[bytes], key: bytes | None = None) -> None:
    producer = Producer(kafka_config(settings))
    for value in values:
        producer.produce(topic, value, key=key)
    assert producer.flush(10) == 0


def _consumer(settings: Settings, group: str, topic: str) -> Consumer:
    consumer = Consumer(
        kafka_config(settings)
        | {"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    consumer.subscribe([topic])
    return consumer


def _take(consumer: Consumer, count: int, timeout_s: float = 20.0) -> list[bytes]:
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(values) < count and time.monotonic() < deadline:
        for message in consumer.consume(num_messages=count - len(values), timeout=0.5):
            assert message.error() is None, message.error()
            values.append(message.value())
    return values


def test_confluent_produce_and_consume_keeps_order(
    infra: Settings, unique: str, make_topic: MakeTopic
) -> None:
    topic = make_topic(unique, partitions=3)
    sent = [f"event-{i}".encode() for i in range(50)]
    _produce(infra, topic, sent, key=b"user-1")  # one key: one partition, so order holds
    consumer = _consumer(infra, unique, topic)
    try:
        assert _take(consumer, len(sent)) == sent
    finally:
        consumer.close()


def test_group_commit_and_restart_resumes_at_the_committed_offset(
    infra: Settings, unique: str, make_topic: MakeTopic
) -> None:
    topic = make_topic(unique, partitions=1)
    sent = [str(i).encode() for i in range(10)]
    _produce(infra, topic, sent)
    first = _consumer(infra, unique, topic)
    try:
        head = _take(first, 4)
        first.commit(asynchronous=False)
    finally:
        first.close()
    second = _consumer(infra, unique, topic)
    try:
        rest = _take(second, 6)
        assert _take(second, 1, timeout_s=1.0) == []
    finally:
        second.close()
    assert head == sent[:4]
    assert rest == sent[4:]


@pytest.fixture
def faust_worker(infra: Settings, unique: str, tmp_path: Path) -> Iterator[object]:
    """Start/stop the echo app as a real faust worker process (aiokafka client)."""
    env = os.environ | {
        "ECHO_BROKER": infra.bootstrap_servers,
        "ECHO_APP_ID": f"{unique}-app",
        "ECHO_TOPIC": unique,
        "ECHO_REDIS_URL": infra.redis_address,
        "ECHO_REDIS_KEY": f"{unique}:echo",
        "ECHO_DATADIR": str(tmp_path / "faust-data"),
    }
    running: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        # Output to a file: an unread pipe would fill up and stall the worker.
        with (tmp_path / "faust.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, str(FAUST_APP), "worker", "--without-web", "-l", "info"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        running.append(process)
        return process

    yield start
    for process in running:
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait_for_list(
    client: redis.Redis, key: str, length: int, timeout_s: float = 60.0
) -> list[bytes]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.llen(key) >= length:
            break
        time.sleep(0.1)
    return list(client.lrange(key, 0, -1))


def test_faust_agent_consumes_and_resumes_after_restart(
    infra: Settings,
    unique: str,
    make_topic: MakeTopic,
    redis_client: redis.Redis,
    faust_worker: object,
) -> None:
    topic = make_topic(unique, partitions=1)
    key = f"{unique}:echo"
    start = faust_worker  # type: ignore[assignment]
    _produce(infra, topic, [b"a", b"b", b"c"])
    worker = start()  # type: ignore[operator]
    assert _wait_for_list(redis_client, key, 3) == [b"a", b"b", b"c"]
    worker.terminate()  # faust commits its offsets on a clean shutdown
    assert worker.wait(timeout=30) == 0

    _produce(infra, topic, [b"d", b"e"])
    start()  # type: ignore[operator]
    # Resumed at the committed offset: the new values arrive once, the old ones are not replayed.
    assert _wait_for_list(redis_client, key, 5) == [b"a", b"b", b"c", b"d", b"e"]
    time.sleep(1.0)
    assert redis_client.llen(key) == 5
