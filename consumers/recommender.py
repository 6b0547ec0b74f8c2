"""The query logic: a RecommendRequest in, a RecommendResponse out, in three steps: read what
the answer needs (the user's view, the index's nearest items, co-visits, popularity) through the
ports, decide purely (consumers/decide.py, scoring and policy in consumers/ranking.py), write the
answer back for a retried request. A short list reads the popular items once more and is
filled from them; nothing is scored after the decision.

Strategies: personalised (the user's session vector), more_like_this (an item's vector),
onboarding (a user with no vector but preferences: text embedded, categories as a filter),
popular (neither: decayed popularity). A personalised or onboarding list that comes out short is
topped up with popular items, so a user never gets an empty list while eligible items exist.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np

from recstream.consumers import metrics
from recstream.consumers.decide import (
    Anchor,
    CollabView,
    QueryConfig,
    QueryContext,
    TopUp,
    candidate_records,
    covisited,
    decide,
    eligible,
    followed,
    taken,
    top_up_category,
)
from recstream.consumers.decide import top_up as fill_up
from recstream.consumers.errors import UnfilterableError, UnknownItemError
from recstream.consumers.ranking import Ranked
from recstream.core.attributes import check_filterable
from recstream.core.index import SearchFilter, Vector, VectorIndex
from recstream.core.ports import Embedder, SessionReader, UserView
from recstream.core.state import UserState
from recstream.schemas.requests import (
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
    RequestCodec,
)

# The user's newest positive items that seed co-visits, transitions and "similar to" reasons
# (the recent window keeps more when RECSTREAM_NEXT_WINDOW is longer than the co-visit one).
RECENT_ANCHORS = 5


class CollabSource(Protocol):
    def for_user(self, user_id: str, state: UserState) -> CollabView | None:
        """The user's view, or None: no model yet, or too little history to lean on it."""


class Recommender:
    def __init__(
        self,
        index: VectorIndex,
        store: SessionReader,
        embedder: Embedder | None,
        config: QueryConfig,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        collab: CollabSource | None = None,
    ) -> None:
        self._index = index
        self._store = store
        self._embedder = embedder
        self._config = config
        self._clock_ms = clock_ms
        self._collab = collab
        self._codec = RequestCodec()

    def recommend(self, request: RecommendRequest) -> RecommendResponse:
        """Answer one request. Raises BadRequestError: more-like-this on an unknown item, a filter
        on an attribute not declared filterable."""
        started = time.perf_counter()
        if request.deadline_ms is not None and self._clock_ms() > request.deadline_ms:
            return RecommendResponse(
                request.request_id, "expired", model_version=self._index.collection
            )
        timings: dict[str, float] = {}
        if request.item_id is not None:
            ranked, strategy = self._more_like_this(request, request.item_id), "more_like_this"
        else:
            user_id = request.user_id or ""
            view = self._store.user_view(user_id)
            cached = self._answer_given(request, view.last_response)
            if cached is not None:
                return cached
            ranked, strategy = self._for_user(request, user_id, view)
            if view.state is not None and view.state.last_time:
                timings["state_age"] = self._state_age_ms(view.state.last_time)
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
            timings_ms={"service": round((time.perf_counter() - started) * 1000, 3)} | timings,
        )
        if request.user_id is not None:
            self._store.remember_response(
                request.user_id, response.to_json(), self._config.cache_ttl_s
            )
        return response

    def _state_age_ms(self, newest_event_ms: int) -> int:
        """How old the newest event the answer reflects is (exported as a histogram)."""
        age_ms = max(0, self._clock_ms() - newest_event_ms)
        metrics.STATE_AGE_SECONDS.observe(age_ms / 1000)
        return age_ms

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
        """The request's filter; raises UnfilterableError for an attribute not declared
        filterable (it has no index) or filtered by the wrong kind of condition."""
        try:
            check_filterable(request.attributes, self._config.filter_attributes)
        except ValueError as error:
            raise UnfilterableError(str(error)) from None
        return SearchFilter(
            available_only=request.available_only or not self._config.serve_hidden_items,
            categories_in=request.categories_in,
            categories_out=request.categories_out,
            exclude_item_ids=tuple(sorted(set(request.exclude) | set(exclude))),
            tags_any=request.tags_any,
            attributes=request.attributes,
        )

    def _for_user(
        self, request: RecommendRequest, user_id: str, view: UserView
    ) -> tuple[list[Ranked], str]:
        state = view.state
        flt = self._filter(request, view.seen)
        if state is not None and state.vector is not None and state.model != self._index.collection:
            # A session vector of another model's space: never searched against this index.
            metrics.MODEL_MISMATCH.inc()
            state = None
        if state is not None and state.vector is not None and np.linalg.norm(state.vector) > 0:
            anchors = self._anchors(state.recent_items[-RECENT_ANCHORS:])
            collab = self._collab.for_user(user_id, state) if self._collab else None
            context = self._around(request, state.vector, anchors, flt, "personalised", collab)
            return self._decided(context, top_up=True), "personalised"
        query = self._preference_vector(request)
        if query is not None:
            if request.preference_categories and not request.categories_in:
                flt = replace(flt, categories_in=request.preference_categories)
            context = self._around(request, query, (), flt, "onboarding")
            return self._decided(context, top_up=True), "onboarding"
        strategy = "trending" if request.trending else "popular"
        context = QueryContext(
            request.k,
            self._diversity(request),
            strategy,
            flt,
            self._category_cap(request),
            trending=request.trending,
        )
        return self._decided(context, top_up=True), strategy

    def _more_like_this(self, request: RecommendRequest, item_id: str) -> list[Ranked]:
        record = self._index.retrieve([item_id], with_vectors=True).get(item_id)
        if record is None or record.vector is None:
            raise UnknownItemError(f"unknown item_id {item_id!r}")
        anchor = Anchor(item_id, record.payload.title, record.vector)
        flt = self._filter(request, [item_id])
        context = self._around(request, record.vector, (anchor,), flt, "more_like_this")
        return self._decided(context, top_up=False)

    def _decided(self, context: QueryContext, top_up: bool) -> list[Ranked]:
        """Decide from the context; a short list (when topping up) reads the popular items and
        is filled from them."""
        ranked, missing = decide(context, self._config)
        if not top_up or missing == 0:
            return ranked
        return fill_up(context, ranked, self._popular_items(context, ranked))

    def _preference_vector(self, request: RecommendRequest) -> Vector | None:
        text = request.preference_text or " ".join(request.preference_categories)
        if not text or self._embedder is None:
            return None
        vector: Vector = self._embedder.embed([text])[0]
        return vector

    def _anchors(self, item_ids: Sequence[str]) -> tuple[Anchor, ...]:
        records = self._index.retrieve(list(item_ids), with_vectors=True)
        return tuple(
            Anchor(i, records[i].payload.title, v)
            for i in reversed(item_ids)
            if i in records and (v := records[i].vector) is not None
        )

    def _around(
        self,
        request: RecommendRequest,
        query: Vector,
        anchors: tuple[Anchor, ...],
        flt: SearchFilter,
        strategy: str,
        collab: CollabView | None = None,
    ) -> QueryContext:
        """Read what ranking around `query` needs: the index's nearest items (fused with the
        collaborative space's best, when the user has a factor), the anchors' co-visited items,
        the items most often chosen after them (the best `wanted`) and every candidate's
        popularity."""
        wanted = request.k * self._config.overfetch
        if collab is not None and collab.slot is not None:
            hits = self._index.search_blend(
                query, collab.factor, collab.slot, wanted, flt, with_vectors=True
            )
        else:
            hits = self._index.search(query, wanted, flt, with_vectors=True)
        seeds = anchors[: self._config.covis_seeds]
        seed_ids = [a.item_id for a in seeds]
        by_anchor = self._store.covisitation_many(seed_ids, self._config.covis_per_seed)
        after = (
            self._store.transitions_many(seed_ids, self._config.next_per_seed)
            if self._config.weights.next > 0 and seed_ids
            else {}
        )
        in_hits = {h.payload.item_id for h in hits}
        scored_after = followed(seeds, after, flt)
        most_after = sorted(scored_after, key=lambda i: -scored_after[i][0])[:wanted]
        outside = [
            i
            for i in dict.fromkeys([*covisited(seeds, by_anchor, flt), *most_after])
            if i not in in_hits
        ]
        covisited_records = self._index.retrieve(outside, with_vectors=True)
        context = QueryContext(
            request.k,
            self._diversity(request),
            strategy,
            flt,
            self._category_cap(request),
            query,
            anchors,
            tuple(hits),
            by_anchor,
            covisited_records,
            collab=collab,
            trending=request.trending,
            transitions=after,
        )
        ids = list(candidate_records(context.hits, covisited_records, flt))
        popularity = self._store.popularity_of(ids) if ids else {}
        metrics.CANDIDATES.observe(len(ids))
        return replace(context, popularity=popularity)

    def _category_cap(self, request: RecommendRequest) -> int:
        return request.max_per_category or self._config.max_per_category

    def _diversity(self, request: RecommendRequest) -> float:
        return self._config.diversity if request.diversity is None else request.diversity

    def _popular_items(self, context: QueryContext, ranked: list[Ranked]) -> TopUp:
        """The popular items a short list is filled from (in the one requested category, if
        one), and any eligible items when too few of them are."""
        skip = taken(context, ranked)
        limit = 4 * context.k + len(skip)
        if context.trending:
            pool = self._store.trending(limit=limit)
        else:
            pool = self._store.popularity(limit=limit, category=top_up_category(context.flt))
        records = self._index.retrieve([i for i in pool if i not in skip], with_vectors=True)
        filling = TopUp(pool, records)
        if len(eligible(pool, records, context.flt, skip)) >= context.k - len(ranked):
            return filling
        any_items = self._index.search(
            _any_direction(self._index.dimension),
            context.k + len(skip),
            context.flt,
            with_vectors=True,
        )
        return replace(filling, any_items=tuple(any_items))


def _any_direction(dimension: int) -> Vector:
    vector = np.zeros(dimension, dtype=np.float32)
    vector[0] = 1.0
    return vector
