"""Idempotent creation of recstream's topics and their dead-letter topics."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from recstream.errors import RecstreamError, TopicMismatchError
from recstream.infra.admin import admin_client, cluster_metadata
from recstream.settings import Settings

DLQ_SUFFIX = ".dlq"


def dlq_topic(topic: str) -> str:
    """Name of the dead-letter topic that holds the bad records of `topic`."""
    return topic + DLQ_SUFFIX


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass
class TopicReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)


def planned_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic the settings ask for: each main topic plus its single-partition DLQ."""
    replication = settings.kafka_replication_factor
    specs = []
    for name, partitions in settings.topic_partitions().items():
        specs.append(TopicSpec(name, partitions, replication))
        specs.append(
            TopicSpec(
                dlq_topic(name), 1, replication, {"retention.ms": str(settings.dlq_retention_ms)}
            )
        )
    return specs


def ensure_topics(
    settings: Settings, specs: list[TopicSpec], timeout_s: float = 30.0
) -> TopicReport:
    """Create what is missing; report existing topics whose partition count differs.

    Raises TopicMismatchError after creating the missing ones, so a wrong layout is never
    silently accepted.
    """
    admin = admin_client(settings)
    existing = cluster_metadata(admin, settings, timeout_s).topics
    report = TopicReport()
    missing = []
    for spec in specs:
        if spec.name not in existing:
            missing.append(spec)
            continue
        report.existing.append(spec.name)
        actual = len(existing[spec.name].partitions)
        if actual != spec.partitions:
            report.mismatched.append(
                f"{spec.name}: has {actual} partitions, settings ask for {spec.partitions}"
            )
    if missing:
        _create(admin, missing, timeout_s)
        report.created.extend(spec.name for spec in missing)
    if report.mismatched:
        raise TopicMismatchError(report.mismatched)
    return report


def _create(admin: AdminClient, specs: list[TopicSpec], timeout_s: float) -> None:
    futures = admin.create_topics(
        [NewTopic(s.name, s.partitions, s.replication_factor, config=s.config) for s in specs],
        operation_timeout=timeout_s, request_timeout=timeout_s,
    )  # fmt: skip
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as error:
            # Another process may have created it between our listing and our request.
            if error.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise RecstreamError(f"could not create topic {name}: {error}") from error


def delete_topics(settings: Settings, names: list[str], timeout_s: float = 30.0) -> None:
    """Delete topics (tests clean up after themselves with this)."""
    admin = admin_client(settings)
    for future in admin.delete_topics(names, operation_timeout=timeout_s).values():
        future.result()
