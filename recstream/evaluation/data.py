"""The evaluation datasets as recstream events, plus how to build their catalog for a split
(side information from held-out interactions, such as a user's tag on a held-out movie, is
left out of the item text)."""

from __future__ import annotations

import csv
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recstream.movielens import CATALOG_TIME_MS, movie_events, rating_events, rows
from recstream.schemas.events import CatalogEvent, InteractionEvent

Visible = Callable[[str, str, int], bool]  # (user, item, time ms) may inform training?
RESTAURANT_START_MS = 1_300_000_000_000  # the dataset has no times: a seeded order stands in


@dataclass(frozen=True)
class EvalDataset:
    name: str
    events: list[InteractionEvent]  # time order
    catalog: Callable[[Visible], list[CatalogEvent]]
    has_time: bool  # False: event order is a seeded shuffle, not real time


def movielens(folder: Path) -> EvalDataset:
    def catalog(visible: Visible) -> list[CatalogEvent]:
        return movie_events(
            folder,
            keep_tag=lambda row: visible(
                f"u{row['userId']}", f"m{row['movieId']}", int(row["timestamp"]) * 1000
            ),
        )

    return EvalDataset("movielens", rating_events(folder), catalog, has_time=True)


def restaurant_event_type(rating: int) -> str:
    """RCdata's overall rating 0/1/2 as an interaction event."""
    return {2: "like", 1: "click"}.get(rating, "dislike")


def restaurant(folder: Path, seed: int = 7) -> EvalDataset:
    """1,161 ratings of 130 restaurants by 138 users. The ratings carry no time, so each user's
    ratings get a seeded random order (the same every run); "last n" then means a random n."""
    ratings = list(rows(folder / "rating_final.csv"))
    random.Random(seed).shuffle(ratings)
    events = [
        InteractionEvent(
            f"rc-{row['userID']}-{row['placeID']}",
            row["userID"],
            f"p{row['placeID']}",
            restaurant_event_type(int(row["rating"])),
            RESTAURANT_START_MS + position * 60_000,
        )
        for position, row in enumerate(ratings)
    ]
    places = _restaurant_catalog(folder)
    return EvalDataset("restaurant", events, lambda _visible: places, has_time=False)


def _restaurant_catalog(folder: Path) -> list[CatalogEvent]:
    cuisines: dict[str, list[str]] = defaultdict(list)
    for row in rows(folder / "chefmozcuisine.csv"):
        cuisines[row["placeID"]].append(row["Rcuisine"].replace("_", " "))
    items = []
    with (folder / "geoplaces2.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            place = row["placeID"]
            kinds = cuisines.get(place, [])
            details = {
                key: row[column].replace("_", " ")
                for key, column in (
                    ("price", "price"),
                    ("ambience", "Rambience"),
                    ("alcohol", "alcohol"),
                    ("smoking", "smoking_area"),
                    ("dress code", "dress_code"),
                    ("city", "city"),
                )
                if row[column] not in ("", "?")
            }
            items.append(
                CatalogEvent(
                    f"rc-place-{place}",
                    f"p{place}",
                    "upsert",
                    CATALOG_TIME_MS,
                    title=row["name"][:512],
                    category=kinds[0] if kinds else "Restaurant",
                    tags=tuple(kinds),
                    description="; ".join(f"{k}: {v}" for k, v in details.items()),
                    attributes=({"cuisine": ", ".join(kinds)} if kinds else {})
                    | ({"price": details["price"]} if "price" in details else {}),
                )
            )
    return items
