"""The CLI and SDK as a new user meets them: one line when something is wrong, defaults in
help, JSON for scripts, events checked before they are sent."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from recstream import InteractionEvent, InvalidMessageError, RecClient
from recstream.core.settings import Settings
from recstream.infra import topics
from recstream.infra.clients import kafka_config
from recstream.staging.stack import metrics_base_port
from tests.conftest import MakeTopic
from tests.integration.worker_process import free_port


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    return subprocess.run(
        [sys.executable, "-m", "recstream.cli", *args],
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "command",
    [
        ("recommend", "u1"),
        ("similar", "i1"),
        ("produce", "interactions", "x.csv"),
        ("topics", "create"),
    ],
)
def test_kafka_unreachable_is_one_line_naming_the_address_and_setting(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    (tmp_path / "x.csv").write_text("user_id,item_id,event_type\nu1,i1,click\n")
    nobody = free_port()  # nothing listens here; _cli's timeout fails a command that hangs
    line = _one_line(
        _cli(
            *(str(tmp_path / part) if part.endswith(".csv") else part for part in command),
            RECSTREAM_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{nobody}",
            RECSTREAM_CONNECT_TIMEOUT_S="2",
        )
    )
    assert f"127.0.0.1:{nobody}" in line and "RECSTREAM_KAFKA_BOOTSTRAP_SERVERS" in line


def test_redis_unreachable_is_one_line_naming_the_setting(infra: Settings) -> None:
    nobody = free_port()
    line = _one_line(
        _cli(
            "train",
            "--status",
            RECSTREAM_KAFKA_PORT=str(infra.kafka_port),
            RECSTREAM_REDIS_URL=f"redis://127.0.0.1:{nobody}/0",
            RECSTREAM_CONNECT_TIMEOUT_S="2",
        )
    )
    assert f"127.0.0.1:{nobody}" in line and "RECSTREAM_REDIS_URL" in line


def test_a_worker_on_a_taken_metrics_port_is_one_line_naming_the_setting(
    infra: Settings, unique: str, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = infra.isolated(unique, qdrant_path=tmp_path / "qdrant")
        env = settings.to_environment() | {"RECSTREAM_METRICS_PORT": str(port)}
        line = _one_line(_cli("worker", "--roles", "interactions", **env))
    assert str(port) in line and "RECSTREAM_METRICS_PORT" in line


def test_a_where_condition_it_cannot_read_is_one_line_before_connecting() -> None:
    line = _one_line(_cli("recommend", "u1", "--where", "year~1990"))
    assert line.startswith("recstream: error: --where: cannot read 'year~1990'"), line


def test_help_shows_every_default_and_the_fields_a_file_may_hold() -> None:
    recommend = _cli("recommend", "--help").stdout
    assert "(default: 10)" in recommend
    assert "(None: the worker's RECSTREAM_DIVERSITY) (default: None)" in " ".join(recommend.split())
    produce = _cli("produce", "interactions", "--help").stdout
    for field in ("user_id", "item_id", "event_type", "event_time", "ISO-8601"):
        assert field in produce


def test_status_as_json_for_scripts(infra: Settings) -> None:
    result = _cli(
        "status",
        "--json",
        RECSTREAM_KAFKA_PORT=str(infra.kafka_port),
        RECSTREAM_METRICS_PORT=str(free_port()),  # where no role process runs
    )
    status = orjson.loads(result.stdout)
    services = {entry["service"]: entry["answering"] for entry in status["services"]}
    assert services == {"kafka": True, "redis": True}
    assert status["processes"] == []


def test_the_client_refuses_an_event_before_sending_it(
    infra: Settings, unique: str, make_topic: MakeTopic
) -> None:
    settings = infra.isolated(unique)
    topic = make_topic(settings.topic_interactions)
    make_topic(settings.topic_responses, 6)
    now = int(time.time() * 1000)
    with RecClient(settings, timeout_s=5) as client:
        with pytest.raises(InvalidMessageError, match="event_type"):
            client.track(InteractionEvent("e1", "u1", "i1", "teleport", now))
        with pytest.raises(InvalidMessageError, match="value"):
            client.track(InteractionEvent("e2", "u1", "i1", "rating", now))
        client.track(InteractionEvent("e3", "u1", "i1", "click", now))
    consumer = Consumer(kafka_config(settings) | {"group.id": uuid.uuid4().hex})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        consumer.close()
    assert high - low == 1  # only the valid event was sent


def test_run_starts_every_role_as_its_own_process_and_status_lists_them(
    infra: Settings, unique: str, tmp_path: Path
) -> None:
    settings = infra.isolated(
        unique,
        metrics_port=metrics_base_port({"query": 2, "train": 0}),
        state_dir=tmp_path / "state",
        embed_threads=1,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    env |= settings.to_environment()
    roles = subprocess.Popen(
        [sys.executable, "-m", "recstream.cli", "run", "--query", "2", "--train", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            status = subprocess.run(
                [sys.executable, "-m", "recstream.cli", "status", "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            processes = orjson.loads(status.stdout)["processes"]
            if len(processes) == 4 and all(p["ready"] for p in processes):
                break
            assert roles.poll() is None, "recstream run exited"
            assert time.monotonic() < deadline, processes
            time.sleep(1)
        assert status.returncode == 0
        assert [p["process"] for p in processes] == [
            "catalog.1",
            "interactions.1",
            "query.1",
            "query.2",
        ]
        base = settings.metrics_port
        assert [p["port"] for p in processes] == [base, base + 100, base + 200, base + 201]
    finally:
        os.killpg(roles.pid, signal.SIGTERM)  # honcho passes it to every role
        roles.wait(60)
        topics.delete_topics(settings, [spec.name for spec in topics.planned_topics(settings)])
    after = subprocess.run(
        [sys.executable, "-m", "recstream.cli", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert orjson.loads(after.stdout)["processes"] == []  # every role stopped with it
