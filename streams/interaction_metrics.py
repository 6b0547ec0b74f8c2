"""The interactions role's Prometheus metrics: recstream_interactions_<what>_<unit>."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
COLLAB_FOLD_IN_SECONDS = Histogram(
    "recstream_interactions_fold_in_seconds",
    "Fold-in time of one interaction batch (every changed user's ALS solve).",
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
INTERACTION_WAITING = Counter(
    "recstream_interactions_waiting_total",
    "Events whose item had no vector yet, by outcome: deferred (started waiting), released "
    "(applied once the vector came, or once the user's earlier event was), expired (applied "
    "without the vector: waited RECSTREAM_ITEM_WAIT_MS, or the room was full).",
    ["outcome"],
)
INTERACTION_WAITING_EVENTS = Gauge(
    "recstream_interactions_waiting_events",
    "Events waiting for their item's vector (or for their user's earlier event) now.",
)
