"""Ranking policy, pure: candidates with their signals in, an ordered, diversified, explained list
out. Similarity finds candidates; this decides what a user should see next.

score = w_sim * sim + w_covis * covis + w_pop * pop + w_next * next (+ w_collab * collab for
users with a collaborative factor), each signal first brought to [0, 1] so the
weights mean what they say: cosine similarity mapped from [-1, 1], co-visitation, next and
popularity (heavy-tailed counts) as log1p(C * x / max) / log1p(C) over the candidates. Dividing
by the max first makes the share independent of the signal's scale: forward-decayed popularity is
stored relative to a landmark that moves, and a moved landmark must not change a ranking.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recstream.core.index import Vector

Scores = npt.NDArray[np.float64]
NEAR_DUPLICATE_COSINE = 0.95
LOG_SHARE_SPREAD = 100.0  # C above: a signal at 1% of the top still gets a share of ~0.15


@dataclass(frozen=True, slots=True)
class RankingWeights:
    """The hybrid score's weights; the shipped ones are the settings' (RECSTREAM_RANK_WEIGHT_*,
    recstream.compose.ranking_weights)."""

    similarity: float
    covisitation: float
    popularity: float
    collab: float = 0.0  # the collaborative space's score, for users who have one
    next: float = 0.0  # how often users chose the item after the user's recent items


@dataclass(frozen=True, slots=True)
class Candidate:
    """One item that may be recommended, with the raw signals gathered for it."""

    item_id: str
    title: str
    category: str | None
    vector: Vector  # unit length
    similarity: float = 0.0  # cosine to the query vector
    covisitation: float = 0.0  # co-visit count with the user's recent items (or the seed item)
    popularity: float = 0.0  # decayed popularity score
    collab: float = 0.0  # predicted preference in the collaborative (ALS) space
    similar_to: str | None = None  # title of the engaged item it is most similar to
    similar_to_cosine: float = 0.0  # its cosine to that item
    covisited_with: str | None = None  # title of the item it was most often seen with
    next: float = 0.0  # times chosen after the user's recent items (newer ones count more)
    follows: str | None = None  # title of the recent item it was most often chosen after


@dataclass(frozen=True, slots=True)
class Ranked:
    candidate: Candidate
    score: float
    reasons: tuple[str, ...]


def _log_share(values: Scores) -> Scores:
    top = float(values.max(initial=0.0))
    if top <= 0:
        return np.zeros_like(values)
    relative = np.maximum(values, 0.0) / top
    shares: Scores = np.log1p(LOG_SHARE_SPREAD * relative) / np.log1p(LOG_SHARE_SPREAD)
    return shares


def hybrid_scores(candidates: Sequence[Candidate], weights: RankingWeights) -> Scores:
    """The weighted sum of the three normalised signals, one score per candidate, in [0, 1]
    when the weights sum to 1."""
    if not candidates:
        return np.zeros(0)
    similarity = (np.array([c.similarity for c in candidates]) + 1.0) / 2.0
    covis = _log_share(np.array([c.covisitation for c in candidates], dtype=np.float64))
    popularity = _log_share(np.array([c.popularity for c in candidates], dtype=np.float64))
    after = _log_share(np.array([c.next for c in candidates], dtype=np.float64))
    collab = np.array([c.collab for c in candidates], dtype=np.float64)
    top_collab = float(collab.max(initial=0.0))
    # ALS preferences aim at 1 for liked items: a share of the best candidate's, negatives at 0.
    collab_share = (
        np.clip(collab / top_collab, 0.0, 1.0) if top_collab > 0 else np.zeros_like(collab)
    )
    return (
        weights.similarity * np.clip(similarity, 0.0, 1.0)
        + weights.covisitation * covis
        + weights.popularity * popularity
        + weights.collab * collab_share
        + weights.next * after
    )


class CategoryCap:
    """The max_per_category business rule (0: none): how many items of each category a list
    holds. Items without a category are never capped."""

    def __init__(self, cap: int, categories: Iterable[str | None] = ()) -> None:
        self._cap = cap
        self._taken = Counter(c for c in categories if c)

    def full(self, category: str | None) -> bool:
        return bool(self._cap and category and self._taken[category] >= self._cap)

    def admit(self, category: str | None) -> bool:
        """Count an item in if the rule lets it in."""
        if self.full(category):
            return False
        if category:
            self._taken[category] += 1
        return True


def diversify(
    candidates: Sequence[Candidate],
    scores: Scores,
    k: int,
    relevance_weight: float,
    duplicate_cosine: float = NEAR_DUPLICATE_COSINE,
    max_per_category: int = 0,
) -> list[int]:
    """Maximal marginal relevance: repeatedly take the candidate maximising
    `lambda * score - (1 - lambda) * max cosine to those already taken`. A candidate closer than
    duplicate_cosine to a taken one is a near-duplicate and never taken. With max_per_category
    (a business rule; 0 = none), a category that has that many items takes no more (items
    without a category are not capped). Returns indices."""
    if not candidates or k <= 0:
        return []
    vectors = np.stack([c.vector for c in candidates]).astype(np.float64)
    categories = np.array([c.category or "" for c in candidates], dtype=object)
    rule = CategoryCap(max_per_category)
    closest = np.full(len(candidates), -1.0)  # max cosine to the selection so far
    open_ = np.ones(len(candidates), dtype=bool)
    chosen: list[int] = []
    while len(chosen) < k and open_.any():
        penalty = np.maximum(closest, 0.0)  # redundancy with what is already chosen
        value = relevance_weight * scores - (1.0 - relevance_weight) * penalty
        value = np.where(open_, value, -np.inf)
        best = int(np.argmax(value))
        chosen.append(best)
        open_[best] = False
        closest = np.maximum(closest, vectors @ vectors[best])
        open_ &= closest <= duplicate_cosine
        category = candidates[best].category
        rule.admit(category)  # an open candidate always fits the rule
        if rule.full(category):
            open_ &= categories != category
    return chosen


@dataclass(frozen=True, slots=True)
class ReasonRule:
    """When a signal may be named as a reason: only if it counted in the score (its weight is
    above 0) and carried the item (its value reaches the bar), so a reason is never shown for a
    signal that contributed nothing."""

    weights: RankingWeights
    similar_min_cosine: float  # "similar to X" only this close to X
    popular_at_least: float = 0.0  # "popular": at least this (the candidates' top fifth)
    liked_at_least: float = 0.0  # "liked by people with your taste": at least this

    def reasons(self, candidate: Candidate, strategy: str) -> tuple[str, ...]:
        """Why this item: similar to X, often seen with Y, often chosen after Z, liked by people
        with your taste, popular (in C). Never empty."""
        weights, found = self.weights, []
        if (
            candidate.similar_to
            and weights.similarity > 0
            and candidate.similar_to_cosine >= self.similar_min_cosine
        ):
            found.append(f"similar to {candidate.similar_to}")
        if candidate.covisited_with and candidate.covisitation > 0 and weights.covisitation > 0:
            found.append(f"often seen with {candidate.covisited_with}")
        if candidate.follows and candidate.next > 0 and weights.next > 0:
            found.append(f"often chosen after {candidate.follows}")
        if weights.collab > 0 and candidate.collab > 0 and candidate.collab >= self.liked_at_least:
            found.append("liked by people with your taste")
        if (
            weights.popularity > 0
            and candidate.popularity > 0
            and candidate.popularity >= self.popular_at_least
        ):
            found.append(f"popular in {candidate.category}" if candidate.category else "popular")
        if not found:
            found.append("popular" if strategy == "popular" else "matches your recent interests")
        return tuple(found)


# A popular top-up's items are there for their popularity alone: that is their reason.
POPULAR_TOP_UP = ReasonRule(RankingWeights(0.0, 0.0, 1.0), similar_min_cosine=1.0)


def rank(
    candidates: Sequence[Candidate],
    k: int,
    weights: RankingWeights,
    relevance_weight: float,
    strategy: str = "personalised",
    max_per_category: int = 0,
    similar_min_cosine: float = 0.0,
) -> list[Ranked]:
    """Score, diversify (within the business rules) and explain: the final list, best first."""
    scores = hybrid_scores(candidates, weights)
    order = diversify(candidates, scores, k, relevance_weight, max_per_category=max_per_category)
    # "Popular" / "liked by people with your taste": in the top fifth of the candidates.
    popular, liked = (
        _top_fifth([c.popularity for c in candidates]),
        _top_fifth([c.collab for c in candidates]),
    )
    rule = ReasonRule(weights, similar_min_cosine, popular, liked)
    return [
        Ranked(candidates[i], float(scores[i]), rule.reasons(candidates[i], strategy))
        for i in order
    ]


def _top_fifth(values: list[float]) -> float:
    """The smallest value still in the top fifth (0 for no values)."""
    ordered = sorted(values, reverse=True)
    return ordered[max(0, len(ordered) // 5 - 1)] if ordered else 0.0
