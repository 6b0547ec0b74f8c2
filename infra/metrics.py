"""Metrics of the adapters every role shares (dead letters, batch retries, lag, the collaborative
version a process uses), labelled by role or topic where several roles report them; each role's
own metrics are in its module (recstream.streams.*_metrics, recstream.consumers.metrics)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

DEAD_LETTERS = Counter(
    "recstream_dead_letters_total",
    "Messages sent to a DLQ, by source topic and reason.",
    ["topic", "reason"],
)
DEAD_LETTERS_TRUNCATED = Counter(
    "recstream_dead_letters_truncated_total",
    "Dead letters sent with a cut value (or key) because the original did not fit the broker's "
    "size limit with the error headers; the headers keep its size and sha256.",
)
BATCH_RETRIES = Counter(
    "recstream_batch_retries_total",
    "Batches (or parts of one being isolated) applied again after a failure, per role and error "
    "type: outages are retried without end, other failures until their records are isolated.",
    ["role", "error"],
)
RECORDS_ISOLATED = Counter(
    "recstream_records_isolated_total",
    "Records dead-lettered (reason processing_failed) because they failed their batch on every "
    "try: the give-ups of the retry policy.",
    ["role"],
)
PROCESSING_LAG = Gauge(
    "recstream_processing_lag_seconds",
    "Now minus the event time of the newest event applied, per role.",
    ["role"],
)
COLLAB_VERSION = Gauge(
    "recstream_collab_model_version",
    "Collaborative (ALS) model version this process uses; 0 until one is trained.",
)
COLLAB_INSTALLS = Counter(
    "recstream_collab_installs_total",
    "Staged collaborative versions this process tried to write into the index, by outcome: "
    "installed, rejected (can never fit, dropped), failed (left staged, retried).",
    ["outcome"],
)

CONSUMER_LAG = Gauge(
    "recstream_consumer_lag_records",
    "Records behind the end of the assigned partitions, per role (librdkafka statistics, every "
    "few seconds).",
    ["role"],
)
CLUSTER_PARTS_RESENT = Counter(
    "recstream_redis_cluster_parts_resent_total",
    "Parts of a batch write (one per Redis Cluster slot) sent again because their node was away "
    "(restarting, failing over, its scripts lost); each part is written once.",
)


class RoleHealth(Collector):
    """`recstream_role_up{role}`: 1 while a role of this process is healthy, 0 when it died or
    is stuck (what /health reports, read at each scrape), so alert rules can see it."""

    def __init__(self, problems: Callable[[], dict[str, str | None]]) -> None:
        self._problems = problems

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "recstream_role_up",
            "1 while the role runs and makes progress; 0 once it died or is stuck (holding "
            "uncommitted records, failing commits, or a loop that stopped turning).",
            labels=["role"],
        )
        for role, problem in sorted(self._problems().items()):
            family.add_metric([role], 0.0 if problem else 1.0)
        yield family


def export_role_health(problems: Callable[[], dict[str, str | None]]) -> None:
    REGISTRY.register(RoleHealth(problems))
