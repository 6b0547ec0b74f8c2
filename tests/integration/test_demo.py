"""`recstream demo` (what `make demo` runs) on a small MovieLens-shaped dataset, with its real
worker process, through the real topics."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from recstream.core.settings import Settings
from recstream.demo import DEMO_COPIES, DEMO_USERS, run_demo
from recstream.infra import topics
from recstream.staging.stack import metrics_base_port
from tests.integration.ingest_helpers import delete_namespace, isolated_settings

GENRES = ["Comedy", "Drama", "Sci-Fi", "Animation", "Horror"]


def _dataset(folder: Path) -> None:
    rng = random.Random(4)
    folder.mkdir()
    movies = ["movieId,title,genres", "1,Toy Story (1995),Adventure|Animation|Children|Comedy"]
    movies += [
        f"{n},Movie {n} ({1990 + n}),{GENRES[n % 5]}|{GENRES[(n + 2) % 5]}" for n in range(2, 40)
    ]
    (folder / "movies.csv").write_text("\n".join(movies) + "\n")
    (folder / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,1,pixar,964982703\n")
    ratings = ["userId,movieId,rating,timestamp"]
    for user in [*DEMO_USERS, "7", "8"]:
        for n in rng.sample(range(1, 40), 12):
            ratings.append(f"{user},{n},{rng.choice([1.0, 3.0, 4.0, 5.0])},{964982703 + n}")
    (folder / "ratings.csv").write_text("\n".join(ratings) + "\n")


def test_demo_prints_recommendations_with_reasons(
    infra: Settings, unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _dataset(tmp_path / "ml")
    settings = isolated_settings(
        infra,
        unique,
        tmp_path,
        dataset_dir=tmp_path / "ml",
        metrics_port=metrics_base_port(DEMO_COPIES),
        state_dir=tmp_path / "state",
    )
    try:
        assert run_demo(settings) == 0
    finally:
        topics.delete_topics(settings, [s.name for s in topics.planned_topics(settings)])
        delete_namespace(settings)
    out = capsys.readouterr().out
    for user in DEMO_USERS:
        assert f"Recommendations for user {user}:\nok (personalised), 10 items" in out
    assert "More like Toy Story (1995):\nok (more_like_this), 10 items" in out
    filtered = out[
        out.index(f"For user {DEMO_USERS[1]}, comedies from 2000 on") : out.index("processes")
    ]
    assert "ok (personalised), 5 items" in filtered
    shown = [int(n) for n in re.findall(r"│\s*\d+\s*│\s*m(\d+)\s*│", filtered)]
    assert len(shown) == 5  # each a comedy of 2000 or later (the seeded movie n is of 1990 + n)
    assert all(1990 + n >= 2000 and "Comedy" in (GENRES[n % 5], GENRES[(n + 2) % 5]) for n in shown)
    assert "similar to " in out
    assert "(their log:" in out
    table = out[out.index("processes") :]  # every process of the topology, each its own
    for process in ("catalog.1", "interactions.1", "query.1", "query.2", "train.1"):
        assert f"{process} " in table
    assert table.count("ready") == 5
    # 60 ratings are too few to train the collaborative space: said, and the demo goes on
    assert "collaborative space not trained: too little data" in out
