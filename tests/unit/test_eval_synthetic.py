"""The whole offline evaluation on a tiny synthetic dataset whose right answer is known: users
who like `a` go on to like `b` (same genre); `p` is popular with everyone but of another genre.
A user who liked only `a` must be shown `b` first by the hybrid and by item-kNN, while the
popularity baseline shows `p`."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from recstream.consumers.ranking import RankingWeights
from recstream.core.index import Vector
from recstream.core.settings import load_settings
from recstream.evaluation.data import EvalDataset
from recstream.evaluation.harness import evaluate, profile, shipped, untuned
from recstream.evaluation.split import Split
from recstream.schemas.events import CatalogEvent, InteractionEvent

DIM = 16
GENRES = {"drama": 0, "comedy": 1, "horror": 2}
ITEMS = {"a": "drama", "b": "drama", "p": "comedy", **{f"n{i}": "horror" for i in range(8)}}


class GenreEmbedder:
    """Stands in for the sentence model: items of one genre point the same way."""

    model_id = "genre-test-model"
    dimension = DIM

    def embed(self, texts: Sequence[str]) -> Vector:
        rows = []
        for text in texts:
            genre = re.search(r"Category: (\w+)\.", text)
            base = np.zeros(DIM)
            base[GENRES[genre.group(1) if genre else "horror"]] = 1.0
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            v = base + 0.1 * np.random.default_rng(seed).normal(size=DIM)
            rows.append(v / np.linalg.norm(v))
        return np.array(rows, dtype=np.float32)


def _dataset() -> tuple[EvalDataset, Split]:
    t = 1_600_000_000_000
    events: list[InteractionEvent] = []

    def add(user: str, item: str, kind: str = "like") -> None:
        nonlocal t
        t += 60_000
        events.append(InteractionEvent(f"e{len(events)}", user, item, kind, t))

    for n in range(30):
        add(f"u{n}", "p")
        add(f"u{n}", f"n{n % 8}", "view")
        if n < 12:
            add(f"u{n}", "a")
            add(f"u{n}", "b")
    add("target", "a")
    items = [
        CatalogEvent(f"c-{item}", item, "upsert", 1, title=f"Film {item}", category=genre)
        for item, genre in ITEMS.items()
    ]
    split = Split("known-answer", events, {"target": {"b"}}, frozenset({("target", "b")}))
    split.history.update(e.user_id for e in events)
    return EvalDataset("synthetic", events, lambda _visible: items, has_time=True), split


def test_the_known_answer_ranks_first(tmp_path: Path) -> None:
    dataset, split = _dataset()
    settings = load_settings({})
    result = evaluate(
        dataset,
        lambda _events: split,
        shipped(settings),
        GenreEmbedder(),
        tmp_path,
        (settings.history_cap, settings.covis_max_neighbours, settings.trending_min_recent),
        tune_on_validation=False,
    )
    methods = result["methods"]
    assert result["test_users"] == 1
    for name in ("hybrid", "shipped", "shipped - collab", "item-kNN", "content"):
        assert methods[name]["@10"]["ndcg"] == 1.0, name  # b at the top
    assert methods["popular"]["@10"]["ndcg"] < 1.0  # p comes first there
    assert methods["hybrid"]["buckets"]["cold"]["users"] == 1


def test_a_profile_loads_back_as_the_configuration_it_was_written_from(tmp_path: Path) -> None:
    ship = shipped(load_settings({}))
    weights = RankingWeights(0.5, 0.4, 0.0, 0.1)
    tuned = replace(
        untuned(ship),
        session=replace(ship.session, covis_window=20),
        blended=replace(ship.blended, weights=weights, diversity=1.0, collab_min_history=0),
    )
    path = tmp_path / "tuned.env"
    path.write_text("".join(f"{key}={value}\n" for key, value in profile(tuned).items()))
    loaded = shipped(load_settings({"RECSTREAM_PROFILE": str(path)}))
    assert loaded.session == tuned.session
    assert loaded.blended == replace(tuned.blended, name="shipped")
    assert loaded.als == ship.als
