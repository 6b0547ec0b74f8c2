"""The decision of one answer, pure: a context read beforehand in, the ranked list out.

The recommender (consumers/recommender.py) reads everything a request needs into a
`QueryContext` (the user's view, the anchors, the index hits, the co-visits, popularity), calls
`decide`, and, only for a list that comes out short, reads the popular items into a `TopUp` and
calls `top_up`. Neither function reads a store, so both are tested without one
(tests/unit/test_decide.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from recstream.consumers.ranking import (
    POPULAR_TOP_UP,
    Candidate,
    CategoryCap,
    Ranked,
    RankingWeights,
    rank,
)
from recstream.core.attributes import AttributeType
from recstream.core.index import ItemRecord, ScoredItem, SearchFilter, Vector
from recstream.core.trending import TRENDING_AT_LEAST

Found = ItemRecord | ScoredItem
# What came after the user's k-th newest item weighs NEXT_DECAY^k (0.7: chosen on the
# MovieLens validation split, docs/evaluation.md).
NEXT_DECAY = 0.7


class CollabView(Protocol):
    """One user's predicted preferences in the collaborative space of one model version."""

    factor: Vector  # the user's factor
    slot: int | None  # the index slot holding the version's item factors (None: not installed)

    def score(self, item_ids: Sequence[str]) -> dict[str, float]:
        """Scores of the given items (items unknown to the model are left out)."""


@dataclass(frozen=True, slots=True)
class Anchor:
    """An item the user engaged with recently (or the seed item): used for reasons and co-visits."""

    item_id: str
    title: str
    vector: Vector


@dataclass(frozen=True, slots=True)
class QueryContext:
    """Everything one answer is decided from, read before deciding."""

    k: int
    diversity: float
    strategy: str
    flt: SearchFilter
    category_cap: int = 0
    query: Vector | None = None  # the direction searched (None: the popular strategy)
    anchors: tuple[Anchor, ...] = ()
    hits: tuple[ScoredItem, ...] = ()  # the index's answer, with vectors
    covisits: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # anchor -> counts
    covisited_records: Mapping[str, ItemRecord] = field(default_factory=dict)  # outside the hits
    # anchor -> the items chosen after it -> counts (the next signal; empty when it is off)
    transitions: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    popularity: Mapping[str, float] = field(default_factory=dict)  # of every candidate
    collab: CollabView | None = None
    trending: bool = False  # a short list is filled by velocity, not by decayed popularity


@dataclass(frozen=True, slots=True)
class TopUp:
    """The popular items a short list is filled from: the pool (item -> popularity, best first),
    their records, and any eligible items for when too few popular ones are."""

    pool: Mapping[str, float]
    records: Mapping[str, ItemRecord]
    any_items: tuple[ScoredItem, ...] = ()


def covisited(
    anchors: Sequence[Anchor],
    by_anchor: Mapping[str, Mapping[str, float]],
    flt: SearchFilter,
) -> dict[str, tuple[float, str]]:
    """Co-visited neighbours of the anchors, not excluded: item -> (total count, title of the
    anchor it was seen with most)."""
    totals: dict[str, float] = {}
    strongest: dict[str, tuple[float, str]] = {}  # item -> (count, title) of its top anchor
    excluded = set(flt.exclude_item_ids) | {a.item_id for a in anchors}
    for anchor in anchors:
        for item, count in by_anchor.get(anchor.item_id, {}).items():
            if item in excluded:
                continue
            totals[item] = totals.get(item, 0.0) + count
            if count > strongest.get(item, (0.0, ""))[0]:
                strongest[item] = (count, anchor.title)
    return {item: (total, strongest[item][1]) for item, total in totals.items()}


def followed(
    anchors: Sequence[Anchor],
    by_anchor: Mapping[str, Mapping[str, float]],
    flt: SearchFilter,
) -> dict[str, tuple[float, str]]:
    """Items chosen after the anchors (newest first), not excluded: item -> (score, title of
    the anchor it was chosen after most). An anchor's counts weigh NEXT_DECAY^position, so what
    came after the newest items counts most."""
    scores: dict[str, float] = {}
    strongest: dict[str, tuple[float, str]] = {}
    excluded = set(flt.exclude_item_ids) | {a.item_id for a in anchors}
    for position, anchor in enumerate(anchors):
        weight = NEXT_DECAY**position
        for item, count in by_anchor.get(anchor.item_id, {}).items():
            if item in excluded:
                continue
            scores[item] = scores.get(item, 0.0) + weight * count
            if weight * count > strongest.get(item, (0.0, ""))[0]:
                strongest[item] = (weight * count, anchor.title)
    return {item: (score, strongest[item][1]) for item, score in scores.items()}


def candidate_records(
    hits: Sequence[ScoredItem],
    covisited_records: Mapping[str, ItemRecord],
    flt: SearchFilter,
) -> dict[str, tuple[Found, Vector]]:
    """The candidates' records in order: the hits, then the co-visited items outside them that
    pass the filter (they come from outside the filtered search)."""
    records: dict[str, tuple[Found, Vector]] = {
        h.payload.item_id: (h, h.vector) for h in hits if h.vector is not None
    }
    for item_id, record in covisited_records.items():
        if item_id not in records and record.vector is not None and flt.admits(record.payload):
            records[item_id] = (record, record.vector)
    return records


def candidates(context: QueryContext, covis_seeds: int) -> list[Candidate]:
    """Every item that may be recommended, with its signals."""
    anchors = context.anchors
    counts = covisited(anchors[:covis_seeds], context.covisits, context.flt)
    after = followed(anchors[:covis_seeds], context.transitions, context.flt)
    outside = {i: r for i, r in context.covisited_records.items() if i in counts or i in after}
    records = candidate_records(context.hits, outside, context.flt)
    if not records or context.query is None:
        return []
    vectors = np.stack([vector for _, vector in records.values()])
    similarities = vectors @ context.query
    # The engaged item each candidate is closest to, and how close, for the "similar to" reason.
    to_anchors = vectors @ np.stack([a.vector for a in anchors]).T if anchors else None
    closest = None if to_anchors is None else to_anchors.argmax(axis=1)
    found = []
    for row, (item_id, (record, vector)) in enumerate(records.items()):
        count, seen_with = counts.get(item_id, (0.0, None))
        next_score, follows = after.get(item_id, (0.0, None))
        found.append(
            Candidate(
                item_id,
                record.payload.title,
                record.payload.category,
                vector,
                similarity=float(similarities[row]),
                covisitation=count,
                popularity=context.popularity.get(item_id, 0.0),
                similar_to=None if closest is None else anchors[int(closest[row])].title,
                similar_to_cosine=0.0 if to_anchors is None else float(to_anchors[row].max()),
                covisited_with=seen_with,
                next=next_score,
                follows=follows,
            )
        )
    if context.collab is not None:
        scores = context.collab.score([c.item_id for c in found])
        found = [replace(c, collab=scores.get(c.item_id, 0.0)) for c in found]
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryConfig:
    """How requests are answered. Built from the settings (recstream.compose.query_config): the
    fields with a RECSTREAM_* setting carry no default here."""

    weights: RankingWeights
    covis_per_seed: int  # co-visited neighbours read per recent item
    next_per_seed: int  # items chosen after, read per recent item (with a next weight above 0)
    max_per_category: int  # business rule for requests that do not set one (0: no cap)
    # Hidden items are served only if the operator allows it and the request asks for them.
    serve_hidden_items: bool
    similar_reason_min_cosine: float  # "similar to X" only for items at least this close to X
    diversity: float  # MMR lambda for requests that do not set one (1: plain score order)
    filter_attributes: Mapping[str, AttributeType]  # what requests may filter on (indexed)
    overfetch: int = 4  # ANN candidates fetched per requested item
    covis_seeds: int = 5  # recent items whose co-visited neighbours become candidates (0: none)
    cache_ttl_s: int = 300


def decide(context: QueryContext, config: QueryConfig) -> tuple[list[Ranked], int]:
    """The ranked list and how many items it lacks (a top-up fills those)."""
    found = candidates(context, config.covis_seeds)
    ranked = rank(
        found,
        context.k,
        config.weights,
        context.diversity,
        context.strategy,
        context.category_cap,
        config.similar_reason_min_cosine,
    )
    return ranked, max(0, context.k - len(ranked))


def taken(context: QueryContext, ranked: Sequence[Ranked]) -> set[str]:
    """Items a top-up must not add: excluded, seen, or already in the list."""
    return set(context.flt.exclude_item_ids) | {r.candidate.item_id for r in ranked}


def top_up_category(flt: SearchFilter) -> str | None:
    """The one requested category whose popularity a top-up reads (None: overall)."""
    return flt.categories_in[0] if len(flt.categories_in) == 1 else None


def eligible(
    pool: Mapping[str, float], records: Mapping[str, ItemRecord], flt: SearchFilter, skip: set[str]
) -> list[tuple[str, ItemRecord]]:
    """The pool's items that may fill the list, most popular first."""
    found = [
        (item_id, record)
        for item_id, record in records.items()
        if item_id not in skip and record.vector is not None and flt.admits(record.payload)
    ]
    found.sort(key=lambda pair: -pool[pair[0]])
    return found


def top_up(context: QueryContext, ranked: list[Ranked], filling: TopUp) -> list[Ranked]:
    """Fill a short list with the most popular eligible items (in the requested categories),
    then, when there are too few of those (a new system), with any eligible items."""
    missing = context.k - len(ranked)
    if missing <= 0:
        return ranked
    skip = taken(context, ranked)
    found: list[tuple[str, Found]] = list(
        eligible(filling.pool, filling.records, context.flt, skip)
    )
    if len(found) < missing:
        found += [
            (h.payload.item_id, h)
            for h in filling.any_items
            if h.payload.item_id not in skip and h.payload.item_id not in filling.records
        ]
    top = filling.pool and max(filling.pool.values())
    extra: list[Ranked] = []
    within_rules = CategoryCap(context.category_cap, (r.candidate.category for r in ranked))
    for item_id, record in found:
        if len(extra) == missing:
            break
        if not within_rules.admit(record.payload.category):
            continue
        assert record.vector is not None
        popularity = filling.pool.get(item_id, 0.0)
        candidate = Candidate(
            item_id,
            record.payload.title,
            record.payload.category,
            record.vector,
            popularity=popularity,
        )
        score = popularity / top if top else 0.0
        extra.append(Ranked(candidate, score, _top_up_reasons(candidate, context.trending)))
    return ranked + extra


def _top_up_reasons(candidate: Candidate, trending: bool) -> tuple[str, ...]:
    """A top-up item is there for its popularity, or (trending) its velocity, alone."""
    if not trending:
        return POPULAR_TOP_UP.reasons(candidate, "popular")
    if candidate.popularity >= TRENDING_AT_LEAST:  # the pool's value is the velocity here
        return (f"trending: {candidate.popularity:.1f}x its usual rate",)
    return ("popular lately",)
