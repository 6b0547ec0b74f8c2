"""A Kafka Admin client whose connection failures become clear recstream errors."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata

from recstream.errors import ServiceUnreachableError
from recstream.settings import Settings

# librdkafka logs every refused connection; callers that report the failure themselves use this.
QUIET_LOGGER = logging.getLogger("recstream.librdkafka")
QUIET_LOGGER.propagate = False
QUIET_LOGGER.addHandler(logging.NullHandler())


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(settings.kafka_client_config() | {"logger": QUIET_LOGGER})


def cluster_metadata(admin: AdminClient, settings: Settings, timeout_s: float) -> ClusterMetadata:
    """Metadata of the cluster, or ServiceUnreachableError naming the bootstrap servers."""
    try:
        return admin.list_topics(timeout=timeout_s)
    except KafkaException as error:
        raise ServiceUnreachableError(
            "kafka",
            settings.bootstrap_servers,
            timeout_s,
            f"{error.args[0].str()} (is it up? `recstream infra up`)",
        ) from error
