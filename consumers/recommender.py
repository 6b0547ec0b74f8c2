"""The query logic: a RecommendRequest in, a RecommendResponse out. Reaches the index, Redis and
the embedder through their adapters; the policy itself is consumers/ranking.py.

Strategies: personalised (the user's session vector), more_like_this (an item's vector),
onboarding (a user with no vector but preferences: text embedded, categories as a filter),
popular (neither: decayed popularity). A personalised or onboarding list that comes out short is
topped up with popular items, so a user never gets an empty list while eligible items exist.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from recstream.consumers import metrics
from recstream.consumers.ranking import (
    Candidate,
    CategoryCap,
    Ranked,
    RankingWeights,
    rank,
    reasons_for,
)
from recstream.core.errors import RecstreamError
from recstream.core.index import ItemRecord, ScoredItem, SearchFilter, Vector, VectorIndex
from recstream.core.ports import Embedder, SessionReader, UserView
from recstream.core.state import UserState
from recstream.schemas.requests import (
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
    RequestCodec,
)


class UnknownItemError(RecstreamError):
    """More-like-this for an item the index does not hold."""


class CollabView(Protocol):
    """One user's predicted preferences in the collaborative space of one model version."""

    factor: Vector  # the user's factor
    slot: int | None  # the index slot holding the version's item factors (None: not installed)

    def score(self, item_ids: Sequence[str]) -> dict[str, float]:
        """Scores of the given items (items unknown to the model are left out)."""


class CollabSource(Protocol):
    def for_user(self, user_id: str, state: UserState) -> CollabView | None:
        """The user's view, or None: no model yet, or too little history to lean on it."""


@dataclass(frozen=True, slots=True)
class QueryConfig:
    weights: RankingWeights = field(default_factory=RankingWeights)
    overfetch: int = 4  # ANN candidates fetched per requested item
    covis_seeds: int = 5  # recent items whose co-visited neighbours become candidates (0: none)
    covis_per_seed: int = 30
    cache_ttl_s: int = 300
    max_per_category: int = 0  # business rule for requests that do not set one (0: no cap)
    # Hidden items are served only if the operator allows it and the request asks for them.
    serve_hidden_items: bool = False


@dataclass(frozen=True, slots=True)
class _Anchor:
    """An item the user engaged with recently (or the seed item): used for reasons and co-visits."""

    item_id: str
    title: str
    vector: Vector


class Recommender:
    def __init__(
        self,
        index: VectorIndex,
        store: SessionReader,
        embedder: Embedder | None,
        config: QueryConfig | None = None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        collab: CollabSource | None = None,
    ) -> None:
        self._index = index
        self._store = store
        self._embedder = embedder
        self._config = config or QueryConfig()
        self._clock_ms = clock_ms
        self._collab = collab
        self._codec = RequestCodec()

    def recommend(self, request: RecommendRequest) -> RecommendResponse:
        """Answer one request. Raises UnknownItemError for more-like-this on an unknown item."""
        started = time.perf_counter()
        if request.deadline_ms is not None and self._clock_ms() > request.deadline_ms:
            return RecommendResponse(
                request.request_id, "expired", model_version=self._index.collection
            )
        if request.item_id is not None:
            ranked, strategy = self._more_like_this(request, request.item_id), "more_like_this"
        else:
            user_id = request.user_id or ""
            view = self._store.user_view(user_id)
            cached = self._answer_given(request, view.last_response)
            if cached is not None:
                return cached
            ranked, strategy = self._for_user(request, user_id, view)
        items = tuple(
            RecommendedItem(
                r.candidate.item_id, r.score, r.reasons, r.candidate.title, r.candidate.category
            )
            for r in ranked
        )
        response = RecommendResponse(
            request.request_id,
            "ok",
            items,
            model_version=self._index.collection,
            strategy=strategy,
            timings_ms={"service": round((time.perf_counter() - started) * 1000, 3)},
        )
        if request.user_id is not None:
            self._store.remember_response(
                request.user_id, response.to_json(), self._config.cache_ttl_s
            )
        return response

    def _answer_given(
        self, request: RecommendRequest, last_response: bytes | None
    ) -> RecommendResponse | None:
        """A retried request (same request_id, e.g. after a client timeout) gets the answer
        already given, from the short-lived cache, instead of a fresh and different list."""
        if last_response is None:
            return None
        cached = self._codec.response(last_response)
        if cached.request_id != request.request_id:
            return None
        metrics.CACHE_HITS.inc()
        return cached

    def _filter(self, request: RecommendRequest, exclude: Iterable[str]) -> SearchFilter:
        return SearchFilter(
            available_only=request.available_only or not self._config.serve_hidden_items,
            categories_in=request.categories_in,
            categories_out=request.categories_out,
            exclude_item_ids=tuple(sorted(set(request.exclude) | set(exclude))),
        )

    def _for_user(
        self, request: RecommendRequest, user_id: str, view: UserView
    ) -> tuple[list[Ranked], str]:
        state = view.state
        flt = self._filter(request, view.seen)
        if state is not None and state.vector is not None and np.linalg.norm(state.vector) > 0:
            anchors = self._anchors(state.recent_items)
            collab = self._collab.for_user(user_id, state) if self._collab else None
            ranked = self._rank_around(request, state.vector, anchors, flt, "personalised", collab)
            return self._top_up(request, ranked, flt), "personalised"
        query = self._preference_vector(request)
        if query is not None:
            if request.preference_categories and not request.categories_in:
                flt = replace(flt, categories_in=request.preference_categories)
            ranked = self._rank_around(request, query, [], flt, "onboarding")
            return self._top_up(request, ranked, flt), "onboarding"
        return self._top_up(request, [], flt), "popular"

    def _more_like_this(self, request: RecommendRequest, item_id: str) -> list[Ranked]:
        record = self._index.retrieve([item_id], with_vectors=True).get(item_id)
        if record is None or record.vector is None:
            raise UnknownItemError(f"unknown item_id {item_id!r}")
        anchor = _Anchor(item_id, record.payload.title, record.vector)
        flt = self._filter(request, [item_id])
        return self._rank_around(request, record.vector, [anchor], flt, "more_like_this")

    def _preference_vector(self, request: RecommendRequest) -> Vector | None:
        text = request.preference_text or " ".join(request.preference_categories)
        if not text or self._embedder is None:
            return None
        vector: Vector = self._embedder.embed([text])[0]
        return vector

    def _anchors(self, item_ids: Sequence[str]) -> list[_Anchor]:
        records = self._index.retrieve(list(item_ids), with_vectors=True)
        return [
            _Anchor(i, records[i].payload.title, v)
            for i in reversed(item_ids)
            if i in records and (v := records[i].vector) is not None
        ]

    def _rank_around(
        self,
        request: RecommendRequest,
        query: Vector,
        anchors: list[_Anchor],
        flt: SearchFilter,
        strategy: str,
        collab: CollabView | None = None,
    ) -> list[Ranked]:
        wanted = request.k * self._config.overfetch
        if collab is not None and collab.slot is not None:
            # One index query: the nearest items by content and the collaborative space's best,
            # fused (both under the request's filter).
            hits = self._index.search_blend(
                query, collab.factor, collab.slot, wanted, flt, with_vectors=True
            )
        else:
            hits = self._index.search(query, wanted, flt, with_vectors=True)
        covisited = self._covisited(anchors[: self._config.covis_seeds], flt)
        candidates = self._candidates(query, anchors, hits, covisited, flt)
        if collab is not None:
            scores = collab.score([c.item_id for c in candidates])
            candidates = [replace(c, collab=scores.get(c.item_id, 0.0)) for c in candidates]
        metrics.CANDIDATES.observe(len(candidates))
        return rank(
            candidates,
            request.k,
            self._config.weights,
            request.diversity,
            strategy,
            self._category_cap(request),
        )

    def _category_cap(self, request: RecommendRequest) -> int:
        return request.max_per_category or self._config.max_per_category

    def _covisited(self, anchors: list[_Anchor], flt: SearchFilter) -> dict[str, tuple[float, str]]:
        """Co-visited neighbours of the anchors, not excluded: item -> (total count, title of
        the anchor it was seen with most)."""
        totals: dict[str, float] = {}
        strongest: dict[str, tuple[float, str]] = {}  # item -> (count, title) of its top anchor
        excluded = set(flt.exclude_item_ids) | {a.item_id for a in anchors}
        by_anchor = self._store.covisitation_many(
            [a.item_id for a in anchors], self._config.covis_per_seed
        )
        for anchor in anchors:
            for item, count in by_anchor[anchor.item_id].items():
                if item in excluded:
                    continue
                totals[item] = totals.get(item, 0.0) + count
                if count > strongest.get(item, (0.0, ""))[0]:
                    strongest[item] = (count, anchor.title)
        return {item: (total, strongest[item][1]) for item, total in totals.items()}

    def _candidates(
        self,
        query: Vector,
        anchors: list[_Anchor],
        hits: list[ScoredItem],
        covisited: dict[str, tuple[float, str]],
        flt: SearchFilter,
    ) -> list[Candidate]:
        records: dict[str, tuple[ItemRecord | ScoredItem, Vector]] = {
            h.payload.item_id: (h, h.vector) for h in hits if h.vector is not None
        }
        missing = [i for i in covisited if i not in records]
        # Co-visited items come from outside the filtered search: filter them here.
        for item_id, record in self._index.retrieve(missing, with_vectors=True).items():
            if record.vector is not None and _passes(record, flt):
                records[item_id] = (record, record.vector)
        if not records:
            return []
        popularity = self._store.popularity_of(list(records))
        vectors = np.stack([vector for _, vector in records.values()])
        similarities = vectors @ query
        # The engaged item each candidate is closest to, for the "similar to" reason.
        closest = (
            (vectors @ np.stack([a.vector for a in anchors]).T).argmax(axis=1) if anchors else None
        )
        candidates = []
        for row, (item_id, (found, vector)) in enumerate(records.items()):
            count, seen_with = covisited.get(item_id, (0.0, None))
            candidates.append(
                Candidate(
                    item_id,
                    found.payload.title,
                    found.payload.category,
                    vector,
                    similarity=float(similarities[row]),
                    covisitation=count,
                    popularity=popularity.get(item_id, 0.0),
                    similar_to=None if closest is None else anchors[int(closest[row])].title,
                    covisited_with=seen_with,
                )
            )
        return candidates

    def _top_up(
        self, request: RecommendRequest, ranked: list[Ranked], flt: SearchFilter
    ) -> list[Ranked]:
        """Fill a short list with the most popular eligible items (in the requested categories)."""
        missing = request.k - len(ranked)
        if missing <= 0:
            return ranked
        taken = set(flt.exclude_item_ids) | {r.candidate.item_id for r in ranked}
        category = flt.categories_in[0] if len(flt.categories_in) == 1 else None
        pool = self._store.popularity(limit=4 * request.k + len(taken), category=category)
        records = self._index.retrieve([i for i in pool if i not in taken], with_vectors=True)
        eligible: list[tuple[str, ItemRecord | ScoredItem]] = [
            (i, r) for i, r in records.items() if r.vector is not None and _passes(r, flt)
        ]
        eligible.sort(key=lambda pair: -pool[pair[0]])
        if len(eligible) < missing:  # nothing popular yet (a new system): any eligible items
            hits = self._index.search(
                _any_direction(self._index.dimension),
                request.k + len(taken),
                flt,
                with_vectors=True,
            )
            eligible += [
                (h.payload.item_id, h)
                for h in hits
                if h.payload.item_id not in taken and h.payload.item_id not in records
            ]
        top = pool and max(pool.values())
        extra: list[Ranked] = []
        within_rules = CategoryCap(
            self._category_cap(request), (r.candidate.category for r in ranked)
        )
        for item_id, record in eligible:
            if len(extra) == missing:
                break
            if not within_rules.admit(record.payload.category):
                continue
            assert record.vector is not None
            candidate = Candidate(
                item_id,
                record.payload.title,
                record.payload.category,
                record.vector,
                popularity=pool.get(item_id, 0.0),
            )
            score = pool.get(item_id, 0.0) / top if top else 0.0
            extra.append(Ranked(candidate, score, reasons_for(candidate, 0.0, "popular")))
        return ranked + extra


def _passes(record: ItemRecord | ScoredItem, flt: SearchFilter) -> bool:
    payload = record.payload
    if flt.available_only and not payload.available:
        return False
    if flt.categories_in and payload.category not in flt.categories_in:
        return False
    return not (flt.categories_out and payload.category in flt.categories_out)


def _any_direction(dimension: int) -> Vector:
    vector = np.zeros(dimension, dtype=np.float32)
    vector[0] = 1.0
    return vector
