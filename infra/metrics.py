"""Metrics of the adapters every role shares (dead letters, batch retries, lag, the collaborative
version a process uses), labelled by role or topic where several roles report them; each role's
own metrics are in its module (recstream.streams.*_metrics, recstream.consumers.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

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
