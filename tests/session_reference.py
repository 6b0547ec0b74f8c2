"""An independent, deliberately plain implementation of the session-vector formula, used by the
tests to check what the processor stored: u <- normalize(decay(dt) * u + w * item)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from recstream.schemas.events import InteractionEvent


def reference_vector(
    events: Sequence[InteractionEvent],
    vectors: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    half_life_ms: float,
) -> np.ndarray:
    """Events of one user in time order (no late events)."""
    u = np.zeros(len(next(iter(vectors.values()))), dtype=np.float64)
    last = None
    for event in events:
        if event.item_id not in vectors:
            continue
        decay = 0.0 if last is None else 0.5 ** ((event.event_time - last) / half_life_ms)
        w = (event.value - 3.0) if event.event_type == "rating" else weights[event.event_type]
        x = decay * u + w * vectors[event.item_id].astype(np.float64)
        norm = float(np.sqrt((x * x).sum()))
        u = x / norm if norm > 1e-12 else np.zeros_like(x)
        last = event.event_time
    return u
