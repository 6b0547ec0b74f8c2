"""Ranking metrics against cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recstream.evaluation import metrics


def test_accuracy_at_k_by_hand() -> None:
    ranked, relevant = ["a", "b", "c", "d"], {"b", "d", "z"}
    assert metrics.precision_at(ranked, relevant, 2) == 0.5
    assert metrics.recall_at(ranked, relevant, 4) == pytest.approx(2 / 3)
    assert metrics.hit_rate_at(ranked, relevant, 1) == 0.0
    assert metrics.hit_rate_at(ranked, relevant, 2) == 1.0
    # hits at places 2 and 4; ideal: three hits at places 1-3 (k = 4)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert metrics.ndcg_at(ranked, relevant, 4) == pytest.approx(dcg / ideal)
    # precision at the hits: 1/2 and 2/4, over min(|relevant|, k) = 3
    assert metrics.average_precision_at(ranked, relevant, 4) == pytest.approx((0.5 + 0.5) / 3)


def test_a_perfect_list_scores_one_and_an_empty_list_zero() -> None:
    relevant = {"x", "y"}
    assert metrics.user_accuracy(["x", "y", "q"], relevant, 2) == {
        "precision": 1.0,
        "recall": 1.0,
        "ndcg": 1.0,
        "map": 1.0,
        "hit_rate": 1.0,
    }
    empty = metrics.user_accuracy([], relevant, 10)
    assert empty is not None and set(empty.values()) == {0.0}


def test_an_item_listed_twice_counts_once_at_its_first_place() -> None:
    # a tie resolved badly by a method must not earn two hits
    assert metrics.precision_at(["a", "a", "b"], {"a"}, 2) == 0.5
    assert metrics.ndcg_at(["b", "a", "a"], {"a"}, 3) == pytest.approx(1 / math.log2(3))


def test_users_without_relevant_items_have_no_accuracy() -> None:
    assert metrics.user_accuracy(["a", "b"], set(), 10) is None


def test_coverage_diversity_and_novelty_by_hand() -> None:
    assert metrics.catalog_coverage([["a", "b"], ["b", "c"]], 10) == pytest.approx(0.3)
    vectors = {
        "a": np.array([1.0, 0.0], dtype=np.float32),
        "b": np.array([0.0, 1.0], dtype=np.float32),
        "c": np.array([1.0, 0.0], dtype=np.float32),
    }
    # pairs (a,b) 1.0, (a,c) 0.0, (b,c) 1.0 -> 2/3; a one-item list is left out
    assert metrics.intra_list_diversity([["a", "b", "c"], ["a"]], vectors) == pytest.approx(2 / 3)
    # 3 training users; a seen by 2 -> -log2(3/4); never-seen z -> -log2(1/4) = 2
    expected = (-math.log2(3 / 4) + 2.0) / 2
    assert metrics.novelty([["a", "z"]], {"a": 2}, 3) == pytest.approx(expected)
