"""Prometheus metrics of the stream processors: recstream_<role>_<what>_<unit>."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CATALOG_EVENTS = Counter(
    "recstream_catalog_events_total",
    "Catalog events by outcome: embedded, unchanged (skipped by hash), payload_updated, deleted, "
    "stale (older than stored), superseded (a later event in the batch won), dead_lettered.",
    ["outcome"],
)
CATALOG_EMBED_BATCH = Histogram(
    "recstream_catalog_embed_batch_items",
    "Texts per embedding call.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
CATALOG_EMBED_SECONDS = Histogram(
    "recstream_catalog_embed_seconds",
    "Wall time of one embedding call.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
INTERACTION_EVENTS = Counter(
    "recstream_interactions_events_total",
    "Interaction events by outcome: applied, duplicate (event id seen), too_late (older than the "
    "user's newest event minus the allowed lateness), too_late_guard_cap (within the lateness but "
    "older than the oldest event id the user's guards keep), dead_lettered.",
    ["outcome"],
)
INTERACTION_VECTOR_MISSING = Counter(
    "recstream_interactions_item_not_embedded_total",
    "Applied events whose item had no vector yet: history and counters were updated, the session "
    "vector was not.",
)
INTERACTION_BATCH_SECONDS = Histogram(
    "recstream_interactions_batch_seconds",
    "Wall time to apply one consumed batch.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
INTERACTION_BATCH_EVENTS = Histogram(
    "recstream_interactions_batch_events",
    "Events per applied batch.",
    buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000, 50000),
)
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
COLLAB_DRIFT = Gauge(
    "recstream_collab_neighbour_drift_ratio",
    "Mean share of items' top-20 collaborative neighbours that changed with the last training.",
)
COLLAB_INSTALLS = Counter(
    "recstream_collab_installs_total",
    "Staged collaborative versions this process tried to write into the index, by outcome: "
    "installed, rejected (can never fit, dropped), failed (left staged, retried).",
    ["outcome"],
)
COLLAB_FOLD_IN_SECONDS = Histogram(
    "recstream_collab_fold_in_seconds",
    "Fold-in time of one interaction batch (every changed user's ALS solve).",
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
