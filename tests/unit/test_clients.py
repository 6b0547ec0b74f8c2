"""One place builds every client's settings: what each client gets from the same settings."""

from __future__ import annotations

import ssl
from pathlib import Path

from recstream.core.settings import load_settings
from recstream.infra.clients import (
    consumer_config,
    faust_options,
    is_outage,
    kafka_config,
    redact_url,
)
from recstream.infra.tls import create_local_ca


def _secured(tmp_path: Path) -> dict[str, str]:
    ca = create_local_ca(tmp_path / "tls")
    client = ca.clients["client"]
    return {
        "RECSTREAM_KAFKA_BOOTSTRAP_SERVERS": "b1:9093,b2:9093",
        "RECSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "RECSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "RECSTREAM_KAFKA_SASL_USERNAME": "alice",
        "RECSTREAM_KAFKA_SASL_PASSWORD": "alice-secret",
        "RECSTREAM_KAFKA_SSL_CA_LOCATION": str(ca.ca_certificate),
        "RECSTREAM_KAFKA_SSL_CERTIFICATE_LOCATION": str(client.certificate),
        "RECSTREAM_KAFKA_SSL_KEY_LOCATION": str(client.key),
        "RECSTREAM_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "RECSTREAM_KAFKA_INSTANCE_ID": "worker-7",
    }


def test_librdkafka_and_faust_get_the_same_security_and_membership(tmp_path: Path) -> None:
    settings = load_settings(_secured(tmp_path))
    config = kafka_config(settings)
    assert config["security.protocol"] == "SASL_SSL"
    assert (config["sasl.mechanism"], config["sasl.username"], config["sasl.password"]) == (
        "SCRAM-SHA-512",
        "alice",
        "alice-secret",
    )
    assert config["ssl.certificate.location"].endswith("client.crt")
    assert config["ssl.endpoint.identification.algorithm"] == "https"
    group = consumer_config(settings, "g")
    assert (group["group.id"], group["group.instance.id"]) == ("g", "worker-7")
    assert (group["session.timeout.ms"], group["heartbeat.interval.ms"]) == (6000, 2000)
    faust = faust_options(settings)
    assert faust["broker"] == ["kafka://b1:9093", "kafka://b2:9093"]
    credentials = faust["broker_credentials"]
    assert (credentials.username, credentials.password) == ("alice", "alice-secret")
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.protocol.value == "SASL_SSL"
    assert isinstance(credentials.ssl_context, ssl.SSLContext)
    assert credentials.ssl_context.check_hostname
    assert (faust["broker_session_timeout"], faust["consumer_group_instance_id"]) == (
        6.0,
        "worker-7",
    )


def test_plaintext_settings_give_plaintext_clients() -> None:
    settings = load_settings({})
    assert kafka_config(settings) == {
        "bootstrap.servers": "127.0.0.1:19092",
        "security.protocol": "PLAINTEXT",
    }
    assert faust_options(settings)["broker_credentials"] is None
    assert "group.instance.id" not in consumer_config(settings, "g")


def test_a_password_in_a_url_is_never_shown() -> None:
    assert redact_url("redis://app:s3cret@cache:6380/0") == "redis://app:***@cache:6380/0"
    assert redact_url("rediss://:s3cret@cache/0") == "rediss://:***@cache/0"
    assert redact_url("redis://cache:6379/0") == "redis://cache:6379/0"


def test_outages_are_told_apart_from_failures_the_records_cause() -> None:
    import redis
    from confluent_kafka import KafkaError, KafkaException

    assert is_outage(redis.ConnectionError("refused"))
    assert is_outage(redis.exceptions.BusyLoadingError("loading"))
    assert is_outage(redis.ResponseError("OOM command not allowed"))
    assert is_outage(KafkaException(KafkaError(KafkaError._TRANSPORT)))
    assert is_outage(KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)))
    assert not is_outage(redis.ResponseError("WRONGTYPE a recstream key holds another type"))
    assert not is_outage(ValueError("bad"))
