"""Security end to end: a broker whose client listener is SASL/SCRAM-SHA-512 over TLS with
client certificates (mTLS), and a Redis serving TLS only with an ACL user, both started by
recstream's own launchers with certificates made for the test. The worker (faust's catalog
agent, the interaction loop, the query worker), the CLI and the trainer must work through them;
a refused login is one line naming the setting; no secret appears in logs, metrics, health or
CLI output."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from recstream.core.settings import Settings, load_settings
from recstream.infra import kafka_server, redis_server
from recstream.infra.clients import KafkaProbe, check_kafka
from recstream.infra.errors import ServiceUnreachableError
from recstream.infra.kafka_server import BrokerSecurity
from recstream.infra.redis_server import RedisTLS
from recstream.infra.tls import create_local_ca
from recstream.staging.stack import KAFKA_USER, secured_client_environment
from tests.integration.worker_process import WorkerProcess, free_port

USERS = 25


@pytest.fixture(scope="module")
def secured(infra: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("secured")
    (root / "kafka").mkdir()
    (root / "kafka" / "libs").symlink_to(kafka_server.layout(infra).libs)  # no second fetch
    ca = create_local_ca(root / "tls", clients=("worker",))
    kafka_password, redis_password = f"k-{uuid.uuid4().hex}", f"r-{uuid.uuid4().hex}"
    redis_port = free_port()
    settings = load_settings(
        {
            "RECSTREAM_STATE_DIR": str(root),
            "RECSTREAM_KAFKA_PORT": str(free_port()),
            "RECSTREAM_KAFKA_CONTROLLER_PORT": str(free_port()),
            "RECSTREAM_REDIS_PORT": str(redis_port),
            "RECSTREAM_REDIS_URL": f"rediss://127.0.0.1:{redis_port}/0",
            "RECSTREAM_COLLAB_MIN_USERS": "5",
            "RECSTREAM_COLLAB_MIN_ITEMS": "5",
            "RECSTREAM_COLLAB_MIN_EVENTS": "50",
            "RECSTREAM_COLLAB_FACTORS": "8",
            "RECSTREAM_PARTITIONS_INTERACTIONS": "2",
            "RECSTREAM_PARTITIONS_CATALOG": "1",
        }
        | secured_client_environment(ca, "worker", kafka_password, redis_password)
    )
    security = BrokerSecurity(
        ca.server.bundle, ca.ca_certificate, free_port(), {KAFKA_USER: kafka_password}
    )
    redis_server.start_redis(
        settings, tls=RedisTLS(ca.server.certificate, ca.server.key, ca.ca_certificate)
    )
    try:
        kafka_server.start_kafka(settings, security)
        yield settings
    finally:
        kafka_server.stop_kafka(settings)
        redis_server.stop_redis(settings)


def _cli(settings: Settings, *args: str, **changes: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    env |= settings.to_environment() | changes
    return subprocess.run(
        [sys.executable, "-m", "recstream.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _secrets(settings: Settings) -> list[str]:
    assert settings.kafka_sasl_password and settings.redis_password
    return [
        settings.kafka_sasl_password.get_secret_value(),
        settings.redis_password.get_secret_value(),
    ]


def _files(tmp_path: Path) -> tuple[Path, Path]:
    catalog = tmp_path / "items.csv"
    catalog.write_text(
        "item_id,title,category\n"
        + "".join(f"m{n},Film number {n},{('Drama', 'Comedy')[n % 2]}\n" for n in range(20))
    )
    events = tmp_path / "events.csv"
    events.write_text(
        "user_id,item_id,event_type,event_time\n"
        + "".join(
            f"u{u},m{(u * 3 + n) % 20},click,{1_700_000_000_000 + n * 1000}\n"
            for u in range(USERS)
            for n in range(8)
        )
    )
    return catalog, events


def test_the_worker_ingests_serves_and_trains_through_sasl_tls_and_a_redis_acl_user(
    secured: Settings, tmp_path: Path
) -> None:
    catalog, events = _files(tmp_path)
    outputs = [_cli(secured, "topics", "create")]
    worker = WorkerProcess(secured, tmp_path / "worker.log", roles="catalog,interactions,query")
    try:
        outputs.append(_cli(secured, "produce", "catalog", str(catalog), "--quiet"))
        worker.wait_for("recstream_catalog_events_total", 20, outcome="embedded")  # via faust
        outputs.append(_cli(secured, "produce", "interactions", str(events), "--quiet"))
        worker.wait_for("recstream_interactions_events_total", USERS * 8, outcome="applied")
        outputs.append(_cli(secured, "recommend", "u3", "--k", "5"))
        assert outputs[-1].returncode == 0, outputs[-1].stderr
        assert outputs[-1].stdout.startswith("ok (personalised), 5 items"), outputs[-1].stdout
        outputs.append(_cli(secured, "train", "--wait", "0"))
        assert outputs[-1].returncode == 0, outputs[-1].stderr
        outputs.append(_cli(secured, "train", "--status"))
        assert "active" in outputs[-1].stdout, outputs[-1].stdout
        outputs.append(_cli(secured, "infra", "status"))
        assert worker.health() == 200
        assert KafkaProbe(secured)()  # what /health asks Kafka, through SASL and TLS
        seen_by_operators = [
            _get(worker.metrics_port, "/metrics"),
            _get(worker.metrics_port, "/health"),
            _get(worker.metrics_port, "/health/live"),
        ]
    finally:
        assert worker.stop() == 0
    assert all(o.returncode == 0 for o in outputs), [o.stderr for o in outputs]
    shown = [o.stdout + o.stderr for o in outputs] + seen_by_operators
    shown.append(worker.log_path.read_text())
    for secret in _secrets(secured):
        assert not [text for text in shown if secret in text]


def _get(port: int, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return str(answer.read().decode())
    except urllib.error.HTTPError as error:
        return str(error.read().decode())


@pytest.mark.parametrize(
    ("command", "changes", "setting"),
    [
        (("recommend", "u1"), {"RECSTREAM_KAFKA_SASL_PASSWORD": "wrong"}, "SASL_PASSWORD"),
        (("produce", "catalog", "x.csv"), {"RECSTREAM_KAFKA_SSL_KEY_LOCATION": ""}, "SSL_"),
        (("train", "--status"), {"RECSTREAM_REDIS_PASSWORD": "wrong"}, "REDIS_PASSWORD"),
        (("worker",), {"RECSTREAM_REDIS_USERNAME": "nobody"}, "REDIS_USERNAME"),
    ],
    ids=["kafka-password", "kafka-client-certificate", "redis-password", "redis-user"],
)
def test_a_refused_login_is_one_line_naming_the_setting(
    secured: Settings, command: tuple[str, ...], changes: dict[str, str], setting: str
) -> None:
    environment = {k: v for k, v in changes.items() if v} | {"RECSTREAM_CONNECT_TIMEOUT_S": "8"}
    stripped = secured.model_copy(
        update={k[10:].lower(): None for k, v in changes.items() if not v}
    )
    result = _cli(stripped, *command, **environment)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and setting in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    for secret in [*_secrets(secured), "wrong"]:
        assert secret not in result.stdout + result.stderr


def test_a_secured_broker_that_is_down_is_reported_unreachable_not_as_a_tls_failure(
    secured: Settings,
) -> None:
    """librdkafka names every broker by its protocol (sasl_ssl://...): a refused connection to
    one must not read as a TLS failure, which ended a restarting role at once (exit 2) while a
    broker of its cluster was still coming back."""
    down = secured.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    with pytest.raises(ServiceUnreachableError):
        check_kafka(down, timeout_s=3)
