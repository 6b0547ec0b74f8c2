from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from recstream.cli_format import print_response
from recstream.core.errors import RecstreamError
from recstream.datasets import MOVIELENS_SHA256, _verify, movielens_dir
from recstream.movielens import movie_events, rating_event_type, rating_events
from recstream.schemas.requests import RecommendedItem, RecommendResponse


@pytest.mark.parametrize(
    ("stars", "kind"),
    [
        (5.0, "like"),
        (4.5, "like"),
        (4.0, "click"),
        (3.5, "click"),
        (3.0, "view"),
        (2.5, "view"),
        (2.0, "skip"),
        (1.5, "skip"),
        (1.0, "dislike"),
        (0.5, "dislike"),
    ],
)
def test_ratings_map_to_event_types(stars: float, kind: str) -> None:
    assert rating_event_type(stars) == kind


def _write(folder: Path) -> None:
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n1,Toy Story (1995),Animation|Comedy\n"
        "2,Odd (2000),(no genres listed)\n"
    )
    (folder / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n1,1,pixar,1\n2,1,Pixar,2\n3,1,fun,3\n"
    )
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n7,1,4.0,964982703\n8,2,1.0,964981247\n"
    )


def test_movies_and_ratings_become_events(tmp_path: Path) -> None:
    _write(tmp_path)
    toy, odd = movie_events(tmp_path)
    assert (toy.item_id, toy.category, toy.tags) == (
        "m1",
        "Animation",
        ("Animation", "Comedy", "pixar", "fun"),
    )
    assert odd.category is None and odd.tags == ()
    first, second = rating_events(tmp_path)
    assert (first.user_id, first.item_id, first.event_type, first.event_time) == (
        "u8",
        "m2",
        "dislike",
        964981247000,
    )  # time order
    assert second.event_type == "click"


def test_dataset_folder_is_checked(tmp_path: Path) -> None:
    with pytest.raises(RecstreamError, match=r"has no ratings\.csv"):
        movielens_dir(tmp_path / "missing", tmp_path)
    _write(tmp_path)
    assert movielens_dir(tmp_path, tmp_path / "cache") == tmp_path
    with pytest.raises(RecstreamError, match="sha256"):
        _verify(tmp_path)  # our tiny files are not the official release
    assert set(MOVIELENS_SHA256) == {"movies.csv", "ratings.csv", "tags.csv"}


def test_a_response_is_a_table_with_headers_or_json(capsys: pytest.CaptureFixture[str]) -> None:
    response = RecommendResponse(
        "r",
        "ok",
        (RecommendedItem("m1", 0.8123, ("similar to Heat",), "Ronin"),),
        strategy="personalised",
    )
    print_response(response)
    table = capsys.readouterr().out
    assert table.splitlines()[0] == "ok (personalised), 1 items"
    for header in ("rank", "item", "title", "score", "why"):
        assert header in table
    assert "Ronin" in table and "0.812" in table and "similar to Heat" in table
    print_response(RecommendResponse("r", "error", error="unknown item_id 'x'"))
    assert capsys.readouterr().out == "error (-), 0 items: unknown item_id 'x'\n"
    print_response(response, as_json=True)
    assert orjson.loads(capsys.readouterr().out)["items"][0]["item_id"] == "m1"
