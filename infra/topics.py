"""Idempotent creation of recstream's topics and their dead-letter topics."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from recstream.core.errors import RecstreamError
from recstream.core.settings import Settings
from recstream.infra.clients import admin_client, cluster_metadata
from recstream.infra.embedder import model_id_for
from recstream.infra.errors import TopicMismatchError

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


def vector_topic(settings: Settings, model_id: str | None = None) -> str:
    """The item-vector topic of an embedding model (the settings' model by default) in the
    settings' pipeline version."""
    model = model_id or model_id_for(settings.model_path)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-").lower()
    version = f".{settings.pipeline_version}" if settings.pipeline_version else ""
    return f"{settings.topic_vectors_prefix}.{safe}{version}"


def _main_topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """The logs the derived state is rebuilt from (docs/architecture.md, "Topology"): the
    catalog and the vectors keep every item's latest record (compacted by item id); the
    interactions are kept for the replay window."""
    compacted = {"cleanup.policy": "compact"}
    return {
        settings.topic_catalog: compacted,
        vector_topic(settings): compacted,
        settings.topic_interactions: {"retention.ms": str(settings.interactions_retention_ms)},
    }


def planned_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic the settings ask for: each main topic plus its single-partition DLQ (the
    vector topic has none: only the catalog processor writes it)."""
    replication = settings.kafka_replication_factor
    configs = _main_topic_configs(settings)
    vectors = vector_topic(settings)
    specs = [TopicSpec(vectors, settings.partitions_catalog, replication, configs[vectors])]
    for name, partitions in settings.topic_partitions().items():
        specs.append(TopicSpec(name, partitions, replication, configs.get(name, {})))
        specs.append(
            TopicSpec(
                dlq_topic(name), 1, replication, {"retention.ms": str(settings.dlq_retention_ms)}
            )
        )
    return specs


def ensure_topics(
    settings: Settings, specs: list[TopicSpec], timeout_s: float = 30.0
) -> TopicReport:
    """Create what is missing, then check every topic's partition count against its spec.

    Raises TopicMismatchError (after creating the missing ones), so a wrong layout is never
    silently accepted, including one created concurrently by someone else.
    """
    admin = admin_client(settings)
    existing = cluster_metadata(admin, settings, timeout_s).topics
    report = TopicReport()
    missing = [spec for spec in specs if spec.name not in existing]
    report.existing = [spec.name for spec in specs if spec.name in existing]
    if missing:
        report.created = _create(admin, missing, timeout_s)
        report.existing += [s.name for s in missing if s.name not in report.created]
    partitions = _partition_counts(admin, settings, [s.name for s in specs], timeout_s)
    report.mismatched = [
        f"{spec.name}: has {partitions[spec.name]} partitions, settings ask for {spec.partitions}"
        for spec in specs
        if partitions[spec.name] != spec.partitions
    ]
    if report.mismatched:
        raise TopicMismatchError(report.mismatched)
    return report


def _partition_counts(
    admin: AdminClient, settings: Settings, names: list[str], timeout_s: float
) -> dict[str, int]:
    """Partition count per topic, waiting for metadata to show topics created a moment ago."""
    deadline = time.monotonic() + timeout_s
    while True:
        topics = cluster_metadata(admin, settings, timeout_s).topics
        if all(name in topics for name in names) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    missing = [name for name in names if name not in topics]
    if missing:
        raise RecstreamError(f"topics not visible in metadata after creation: {missing}")
    return {name: len(topics[name].partitions) for name in names}


def _create(admin: AdminClient, specs: list[TopicSpec], timeout_s: float) -> list[str]:
    """Create topics; the names this call created (not those someone else created first)."""
    futures = admin.create_topics(
        [NewTopic(s.name, s.partitions, s.replication_factor, config=s.config) for s in specs],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as error:
            if error.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise RecstreamError(f"could not create topic {name}: {error}") from error
    return created


def delete_topics(settings: Settings, names: list[str], timeout_s: float = 30.0) -> None:
    """Delete topics (tests clean up after themselves with this)."""
    admin = admin_client(settings)
    for future in admin.delete_topics(names, operation_timeout=timeout_s).values():
        future.result()
