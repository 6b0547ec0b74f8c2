"""Ranking metrics, pure. Lists are in rank order; an item listed twice counts once (at its first
place); a user without relevant items has no accuracy metrics (left out of averages, never 0)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations

import numpy as np

from recstream.core.index import Vector

ACCURACY = ("precision", "recall", "ndcg", "map", "hit_rate")


def _first_k(ranked: Sequence[str], k: int) -> list[str]:
    return list(dict.fromkeys(ranked))[:k]


def precision_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    return sum(item in relevant for item in _first_k(ranked, k)) / k


def recall_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    return sum(item in relevant for item in _first_k(ranked, k)) / len(relevant)


def hit_rate_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    return float(any(item in relevant for item in _first_k(ranked, k)))


def ndcg_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Binary gains, log2 discount; the ideal list puts min(|relevant|, k) hits first."""
    dcg = sum(
        1.0 / math.log2(place + 2)
        for place, item in enumerate(_first_k(ranked, k))
        if item in relevant
    )
    ideal = sum(1.0 / math.log2(place + 2) for place in range(min(len(relevant), k)))
    return dcg / ideal


def average_precision_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Mean of precision@i over the places i <= k holding a hit, over min(|relevant|, k)."""
    hits, total = 0, 0.0
    for place, item in enumerate(_first_k(ranked, k)):
        if item in relevant:
            hits += 1
            total += hits / (place + 1)
    return total / min(len(relevant), k)


def user_accuracy(ranked: Sequence[str], relevant: set[str], k: int) -> dict[str, float] | None:
    """All accuracy metrics at k for one user; None when the user has nothing relevant."""
    if not relevant:
        return None
    return {
        "precision": precision_at(ranked, relevant, k),
        "recall": recall_at(ranked, relevant, k),
        "ndcg": ndcg_at(ranked, relevant, k),
        "map": average_precision_at(ranked, relevant, k),
        "hit_rate": hit_rate_at(ranked, relevant, k),
    }


def catalog_coverage(lists: Iterable[Sequence[str]], catalog_size: int) -> float:
    """Share of the catalog that appears in at least one list."""
    shown = set().union(*(set(items) for items in lists))
    return len(shown) / catalog_size if catalog_size else 0.0


def intra_list_diversity(lists: Iterable[Sequence[str]], vectors: Mapping[str, Vector]) -> float:
    """Mean over lists of the mean pairwise cosine distance (1 - cos) of the items' content
    vectors; lists with fewer than two known items are left out."""
    values = []
    for items in lists:
        known = [vectors[i] for i in dict.fromkeys(items) if i in vectors]
        if len(known) < 2:
            continue
        distances = [1.0 - float(a @ b) for a, b in combinations(known, 2)]
        values.append(float(np.mean(distances)))
    return float(np.mean(values)) if values else 0.0


def novelty(
    lists: Iterable[Sequence[str]], interactions: Mapping[str, int], user_count: int
) -> float:
    """Mean self-information -log2(p) of recommended items, p = share of training users who
    interacted with the item (add-one smoothed, so unseen items are finite and the most novel)."""
    values = [
        -math.log2((interactions.get(item, 0) + 1) / (user_count + 1))
        for items in lists
        for item in dict.fromkeys(items)
    ]
    return float(np.mean(values)) if values else 0.0
