"""The train role's Prometheus metrics: recstream_train_<what>_<unit>."""

from __future__ import annotations

from prometheus_client import Gauge

COLLAB_DRIFT = Gauge(
    "recstream_train_neighbour_drift_ratio",
    "Mean share of items' top-20 collaborative neighbours that changed with the last training.",
)
