"""The catalog role's Prometheus metrics: recstream_catalog_<what>_<unit>."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
