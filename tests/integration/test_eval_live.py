"""`recstream eval --live`: a sample through the real topics and worker gives the same lists as
the offline path over the same state."""

from __future__ import annotations

import random
from pathlib import Path

from recstream.compose import load_embedder
from recstream.core.settings import Settings
from recstream.evaluation.data import EvalDataset
from recstream.evaluation.live import check_live
from recstream.evaluation.split import last_fraction
from recstream.schemas.events import CatalogEvent, InteractionEvent
from tests.integration.ingest_helpers import isolated_settings
from tests.integration.worker_process import free_port

GENRES = ["Comedy", "Drama", "Sci-Fi", "Animation", "Horror"]
KINDS = ["view", "click", "like", "like", "dislike", "skip"]


def _dataset() -> EvalDataset:
    rng = random.Random(8)
    items = [
        CatalogEvent(
            f"c{n}",
            f"m{n}",
            "upsert",
            1_600_000_000_000,
            title=f"Movie {n} ({1990 + n})",
            category=GENRES[n % 5],
            tags=(GENRES[n % 5], GENRES[(n + 2) % 5], f"tag{n % 7}"),
        )
        for n in range(60)
    ]
    events = []
    t = 1_600_000_000_000
    for n in range(400):
        t += rng.choice([1_000, 60_000, 3_600_000])
        user, item = f"u{rng.randrange(12)}", f"m{min(59, int(rng.expovariate(0.08)))}"
        events.append(InteractionEvent(f"e{n}", user, item, rng.choice(KINDS), t))
    return EvalDataset("synthetic", events, lambda _visible: items, has_time=True)


def test_live_lists_equal_offline_lists(infra: Settings, unique: str, tmp_path: Path) -> None:
    """With a collaborative version trained on the sample: the worker installs it, and both
    sides retrieve by both spaces (Qdrant's fused query vs the in-memory index's)."""
    settings = isolated_settings(
        infra,
        unique,
        tmp_path,
        metrics_port=free_port(),
        collab_min_events=50,
        collab_min_users=3,
        collab_min_items=10,
        collab_factors=8,
        collab_min_history=1,
        collab_refresh_s=0.2,
        rank_weight_collab=0.4,
    )
    dataset = _dataset()
    split = last_fraction(dataset.events, 0.2)
    check = check_live(settings, dataset, split, 8, load_embedder(settings))
    assert check.collab_version is not None  # trained, installed, blended on both sides
    assert len(check.users) == 8
    assert all(len(check.live[u]) == 10 for u in check.users)  # real answers, not empty ones
    assert check.mismatched == [], check.summary()
    assert len({tuple(check.live[u]) for u in check.users}) > 1  # personalised, not one list
