"""The index replicas' Prometheus metrics: recstream_replica_<what>."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

REPLICA_RECORDS = Counter(
    "recstream_replica_records_total",
    "Vector-topic records by replica and outcome: applied, unchanged, stale (older than the "
    "copy holds), removed, superseded (a later record of the item in the batch), invalid.",
    ["replica", "outcome"],
)
REPLICA_LAG = Gauge(
    "recstream_replica_lag_records",
    "Vector-topic records not yet applied to this process's copy.",
    ["replica"],
)
REPLICA_READY = Gauge(
    "recstream_replica_ready",
    "1 once the copy has caught up with the vector topic as it was at start.",
    ["replica"],
)
REPLICA_RETRIES = Counter(
    "recstream_replica_retries_total",
    "Batches of the vector topic read again because the copy failed to take them (an index "
    "outage): retried every second, never skipped.",
    ["replica"],
)
