from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from recstream.consumers.ranking import (
    Candidate,
    RankingWeights,
    ReasonRule,
    diversify,
    hybrid_scores,
    rank,
)


def _unit(*values: float) -> np.ndarray:
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def _cand(
    item: str,
    vector: np.ndarray,
    sim: float = 0.0,
    covis: float = 0.0,
    pop: float = 0.0,
    **extra: object,
) -> Candidate:
    return Candidate(item, f"Title {item}", "Drama", vector, sim, covis, pop, **extra)  # type: ignore[arg-type]


def test_signals_are_normalised_so_the_weights_mean_what_they_say() -> None:
    same = _unit(1, 0, 0)
    candidates = [
        _cand("a", same, sim=1.0, covis=0, pop=0),
        _cand("b", same, sim=-1.0, covis=50, pop=0),
        _cand("c", same, sim=-1.0, covis=0, pop=1e6),
    ]
    scores = hybrid_scores(candidates, RankingWeights(0.6, 0.3, 0.1))
    np.testing.assert_allclose(scores, [0.6, 0.3, 0.1])
    assert hybrid_scores([], RankingWeights(0.6, 0.3, 0.1)).shape == (0,)


def test_rescaled_signals_give_the_same_scores() -> None:
    """Popularity stored against another forward-decay landmark is the same popularity."""
    v = _unit(1, 0, 0)
    signals = [(0.2, 3.0, 5.0), (0.4, 0.0, 80.0), (0.1, 9.0, 0.5)]
    for scale in (1e-6, 3.0, 2.0**40):
        scaled = [
            _cand(f"i{n}", v, sim=s, covis=c, pop=p * scale) for n, (s, c, p) in enumerate(signals)
        ]
        plain = [_cand(f"i{n}", v, sim=s, covis=c, pop=p) for n, (s, c, p) in enumerate(signals)]
        np.testing.assert_allclose(
            hybrid_scores(scaled, RankingWeights(0.6, 0.3, 0.1)),
            hybrid_scores(plain, RankingWeights(0.6, 0.3, 0.1)),
        )


def test_equal_similarity_is_broken_by_covisitation_then_popularity() -> None:
    v = _unit(1, 0, 0)
    candidates = [
        _cand("plain", v, sim=0.5),
        _cand("popular", v, sim=0.5, pop=10),
        _cand("covisited", v, sim=0.5, covis=3),
    ]
    ranked = rank(
        candidates, 3, RankingWeights(0.6, 0.3, 0.1), relevance_weight=1.0, strategy="personalised"
    )
    # identical vectors are near-duplicates: only the best of them survives
    assert [r.candidate.item_id for r in ranked] == ["covisited"]


def test_mmr_with_lambda_one_is_score_order_and_lower_lambda_diversifies() -> None:
    near_a1, near_a2 = _unit(1, 0, 0), _unit(1, 0.75, 0)  # cosine 0.8: related, not duplicates
    far = _unit(0, 0, 1)
    candidates = [_cand("a1", near_a1), _cand("a2", near_a2), _cand("far", far)]
    scores = np.array([0.9, 0.85, 0.6])
    cosine = float(near_a1 @ near_a2)
    assert 0.5 < cosine < 0.95  # related, not duplicates
    assert diversify(candidates, scores, 3, relevance_weight=1.0) == [0, 1, 2]
    assert diversify(candidates, scores, 3, relevance_weight=0.5) == [0, 2, 1]


def test_near_duplicates_are_collapsed_whatever_lambda() -> None:
    base = _unit(1, 0, 0)
    dup = _unit(1, 0.01, 0)
    other = _unit(0, 1, 0)
    candidates = [_cand("x", base), _cand("x-copy", dup), _cand("y", other)]
    picked = diversify(candidates, np.array([0.9, 0.89, 0.1]), 3, relevance_weight=1.0)
    assert picked == [0, 2]


def test_max_per_category_caps_each_category_and_leaves_uncategorised_items_alone() -> None:
    directions = [_unit(*np.eye(8)[n]) for n in range(8)]  # unrelated: MMR changes nothing
    categories = ["Drama", "Drama", "Drama", "Comedy", None, None, "Drama", "Comedy"]
    candidates = [
        replace(_cand(f"i{n}", v), category=c)
        for n, (v, c) in enumerate(zip(directions, categories, strict=True))
    ]
    scores = np.linspace(1.0, 0.3, 8)  # i0 best
    assert diversify(candidates, scores, 8, 1.0) == list(range(8))  # no rule: score order
    capped = diversify(candidates, scores, 8, 1.0, max_per_category=1)
    assert capped == [0, 3, 4, 5]  # one Drama, one Comedy, every uncategorised item
    ranked = rank(candidates, 3, RankingWeights(0.6, 0.3, 0.1), 1.0, max_per_category=2)
    assert [r.candidate.category for r in ranked].count("Drama") <= 2


ALL_WEIGHTS = RankingWeights(0.4, 0.3, 0.2, 0.1)


def test_every_item_carries_reasons() -> None:
    v = _unit(1, 0, 0)
    rule = ReasonRule(ALL_WEIGHTS, similar_min_cosine=0.6, popular_at_least=50)
    full = _cand(
        "a", v, covis=4, pop=100, similar_to="Heat", similar_to_cosine=0.8, covisited_with="Ronin"
    )
    assert rule.reasons(full, "personalised") == (
        "similar to Heat",
        "often seen with Ronin",
        "popular in Drama",
    )
    assert rule.reasons(_cand("b", v), "popular") == ("popular",)
    assert rule.reasons(_cand("c", v), "personalised") == ("matches your recent interests",)
    liked = replace(_cand("d", v), collab=0.8)
    assert replace(rule, liked_at_least=0.5).reasons(liked, "personalised") == (
        "liked by people with your taste",
    )
    assert replace(rule, liked_at_least=0.9).reasons(liked, "personalised") == (
        "matches your recent interests",
    )


def test_similar_to_needs_the_threshold_and_every_reason_its_weight() -> None:
    v = _unit(1, 0, 0)
    rule = ReasonRule(ALL_WEIGHTS, similar_min_cosine=0.6)
    near = _cand("a", v, similar_to="Heat", similar_to_cosine=0.61)
    far = _cand("b", v, similar_to="Heat", similar_to_cosine=0.59)
    assert rule.reasons(near, "personalised") == ("similar to Heat",)
    assert rule.reasons(far, "personalised") == ("matches your recent interests",)
    every = replace(near, covisitation=3, covisited_with="Ronin", popularity=9, collab=1.0)
    unweighted = ReasonRule(RankingWeights(0.0, 0.0, 0.0, 0.0), similar_min_cosine=0.6)
    assert unweighted.reasons(every, "personalised") == ("matches your recent interests",)


def test_a_reason_is_never_shown_for_a_signal_that_contributed_nothing() -> None:
    rng = np.random.default_rng(7)
    for trial in range(200):
        weights = RankingWeights(*(float(w) * (rng.random() < 0.6) for w in rng.random(5)))
        candidates = [
            replace(
                _cand(
                    f"i{n}",
                    _unit(*rng.normal(size=3)),
                    sim=float(rng.uniform(-1, 1)),
                    covis=float(rng.choice([0, rng.exponential(3)])),
                    pop=float(rng.choice([0, rng.exponential(10)])),
                    similar_to="Heat",
                    similar_to_cosine=float(rng.uniform(0, 1)),
                    covisited_with="Ronin",
                ),
                collab=float(rng.choice([0, rng.normal()])),
                next=float(rng.choice([0, rng.exponential(2)])),
                follows="Alien",
            )
            for n in range(12)
        ]
        for ranked in rank(candidates, 6, weights, 0.7, similar_min_cosine=0.6):
            c = ranked.candidate
            for reason in ranked.reasons:
                if reason.startswith("similar to"):
                    assert weights.similarity > 0 and c.similar_to_cosine >= 0.6, trial
                elif reason.startswith("often seen with"):
                    assert weights.covisitation > 0 and c.covisitation > 0, trial
                elif reason.startswith("often chosen after"):
                    assert weights.next > 0 and c.next > 0, trial
                elif reason.startswith("liked by"):
                    assert weights.collab > 0 and c.collab > 0, trial
                elif reason.startswith("popular in"):
                    assert weights.popularity > 0 and c.popularity > 0, trial
                else:
                    assert reason == "matches your recent interests", trial


def test_the_next_signal_counts_with_its_weight_and_names_what_came_before() -> None:
    v = _unit(1, 0, 0)
    candidates = [
        replace(_cand("a", v, sim=0.2), next=9.0, follows="Alien"),
        _cand("b", v, sim=0.3),
    ]
    without = hybrid_scores(candidates, RankingWeights(1.0, 0.0, 0.0))
    with_next = hybrid_scores(candidates, RankingWeights(1.0, 0.0, 0.0, 0.0, 2.0))
    assert without[1] > without[0] and with_next[0] > with_next[1]
    np.testing.assert_allclose(with_next, [0.6 + 2.0, 0.65])  # a's share is the top's, 1
    ranked = rank(candidates, 2, RankingWeights(1.0, 0.0, 0.0, 0.0, 2.0), 1.0)
    assert ranked[0].reasons == ("often chosen after Alien",)
    silent = rank(candidates, 2, RankingWeights(1.0, 0.0, 0.0), 1.0)
    assert all("often chosen after" not in r for item in silent for r in item.reasons)


def test_the_collab_score_counts_only_with_its_weight() -> None:
    v = _unit(1, 0, 0)
    candidates = [
        replace(_cand("a", v, sim=0.2), collab=1.0),
        replace(_cand("b", v, sim=0.3), collab=-0.5),
    ]
    without = hybrid_scores(candidates, RankingWeights(1.0, 0.0, 0.0, 0.0))
    with_collab = hybrid_scores(candidates, RankingWeights(0.5, 0.0, 0.0, 0.5))
    assert without[1] > without[0]
    assert with_collab[0] > with_collab[1]  # share 1 vs a negative preference clipped to 0
    np.testing.assert_allclose(with_collab, [0.5 * 0.6 + 0.5, 0.5 * 0.65])


@pytest.mark.parametrize("k", [0, 1, 5])
def test_rank_returns_at_most_k(k: int) -> None:
    rng = np.random.default_rng(0)
    candidates = [
        _cand(f"i{n}", _unit(*rng.normal(size=8)), sim=float(rng.uniform(-1, 1))) for n in range(20)
    ]
    ranked = rank(candidates, k, RankingWeights(0.6, 0.3, 0.1), relevance_weight=0.7)
    assert len(ranked) == k
    assert len({r.candidate.item_id for r in ranked}) == k
