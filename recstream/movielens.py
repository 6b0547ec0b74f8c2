"""MovieLens files as recstream events: movies as catalog events, ratings as interaction events.
Used by `make demo` and by `recstream eval`.

Ratings become event types (docs/demo.md): 4.5-5 like, 3.5-4 click, 2.5-3 view, 1.5-2 skip,
0.5-1 dislike.
"""

from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

from recstream.schemas.events import CatalogEvent, InteractionEvent

CATALOG_TIME_MS = 1_537_920_000_000  # 2018-09-26, when the dataset was generated
_YEAR = re.compile(r"\((\d{4})\)\s*$")
TagFilter = Callable[[dict[str, str]], bool]


def rating_event_type(rating: float) -> str:
    """MovieLens stars (0.5-5) as interaction events."""
    if rating >= 4.5:
        return "like"
    if rating >= 3.5:
        return "click"
    if rating >= 2.5:
        return "view"
    if rating >= 1.5:
        return "skip"
    return "dislike"


def rows(path: Path) -> Iterator[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        yield from csv.DictReader(handle)


def movie_events(folder: Path, keep_tag: TagFilter | None = None) -> list[CatalogEvent]:
    """Movies with their genres and the users' most frequent tags as item text. keep_tag: which
    rows of tags.csv to use (the evaluation leaves out tags from held-out interactions)."""
    tags: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows(folder / "tags.csv"):
        if keep_tag is not None and not keep_tag(row):
            continue
        tags[row["movieId"]][row["tag"].strip().lower()[:64]] += 1
    events = []
    for row in rows(folder / "movies.csv"):
        genres = [g for g in row["genres"].split("|") if g and g != "(no genres listed)"]
        user_tags = [t for t, _ in tags[row["movieId"]].most_common(8) if t and t not in genres]
        events.append(
            CatalogEvent(
                f"ml-movie-{row['movieId']}",
                f"m{row['movieId']}",
                "upsert",
                CATALOG_TIME_MS,
                title=row["title"][:512],
                category=genres[0] if genres else None,
                tags=tuple(dict.fromkeys(genres + user_tags)),
                attributes=_attributes(row["title"], genres),
            )
        )
    return events


def _attributes(title: str, genres: list[str]) -> dict[str, str | int]:
    """Genres (a text attribute) and the release year from the title's "(1995)", where one is
    (a filterable number when RECSTREAM_FILTER_ATTRIBUTES declares it, as the demo does)."""
    attributes: dict[str, str | int] = {"genres": ", ".join(genres)}
    year = _YEAR.search(title)
    if year is not None:
        attributes["year"] = int(year.group(1))
    return attributes


def rating_events(folder: Path) -> list[InteractionEvent]:
    """Ratings in time order as interaction events."""
    events = [
        InteractionEvent(
            f"ml-{row['userId']}-{row['movieId']}-{row['timestamp']}",
            f"u{row['userId']}",
            f"m{row['movieId']}",
            rating_event_type(float(row["rating"])),
            int(row["timestamp"]) * 1000,
        )
        for row in rows(folder / "ratings.csv")
    ]
    events.sort(key=lambda e: e.event_time)
    return events
