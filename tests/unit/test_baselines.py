"""The evaluation's baselines against results computed by hand on a tiny matrix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from recstream.evaluation.baselines import Ease, Interactions, RP3Beta
from recstream.schemas.events import InteractionEvent

WEIGHTS = {"purchase": 1.0, "dislike": -1.0}


def _data(
    pairs: Sequence[tuple[str, str]], dislikes: Sequence[tuple[str, str]] = ()
) -> Interactions:
    events = [
        InteractionEvent(f"e{n}", user, item, "purchase", n) for n, (user, item) in enumerate(pairs)
    ]
    events += [InteractionEvent(f"d{n}", u, i, "dislike", n) for n, (u, i) in enumerate(dislikes)]
    return Interactions.build(events, ["a", "b", "c", "d"], WEIGHTS)


def test_ease_weights_and_scores_by_hand() -> None:
    # X (users x items a, b, c): u1 = a b, u2 = b c, u3 = a c; item d never seen.
    data = _data([("u1", "a"), ("u1", "b"), ("u2", "b"), ("u2", "c"), ("u3", "a"), ("u3", "c")])
    ease = Ease(data, regularization=1.0)
    # X^T X + I on a, b, c is 2I + J (J all ones), whose inverse is I/2 - J/10: diagonal 0.4,
    # off-diagonal -0.1, so B = 0.1 / 0.4 = 0.25 off the diagonal. Item d: (0 + 1)^-1 = 1.
    expected = np.zeros((4, 4))
    expected[:3, :3] = 0.25
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(ease.weights, expected, atol=1e-12)
    # u1's row (a, b) times B: a 0.25, b 0.25, c 0.5, d 0: c first, then d; seen items left out.
    assert ease.recommend("u1", 2) == ["c", "d"]


def test_ease_gives_a_user_without_positive_history_the_popular_items() -> None:
    data = _data([("u1", "a"), ("u2", "a"), ("u2", "b")], dislikes=[("cold", "c")])
    assert Ease(data, regularization=1.0).recommend("cold", 2) == ["a", "b"]


def test_rp3beta_weights_and_scores_by_hand() -> None:
    # u1 = a b c, u2 = a b, u3 = a; d never seen. Popularity a 3, b 2, c 1.
    data = _data([("u1", "a"), ("u1", "b"), ("u1", "c"), ("u2", "a"), ("u2", "b"), ("u3", "a")])
    # User -> item steps: u1 1/3 each, u2 1/2 each, u3 1. Item -> user: a 1/3 each, b 1/2, c 1.
    # W_ab = 1/3 * 1/3 (via u1) + 1/3 * 1/2 (via u2) = 5/18; W_ac = 1/9; W_ba = 1/6 + 1/4 = 5/12;
    # W_bc = 1/6; W_ca = W_cb = 1/3. beta = 1 divides column j by item j's popularity.
    walk = np.array([[0, 5 / 18, 1 / 9], [5 / 12, 0, 1 / 6], [1 / 3, 1 / 3, 0]])
    plain = RP3Beta(data, alpha=1.0, beta=0.0)
    np.testing.assert_allclose(plain.weights.toarray()[:3, :3], walk, atol=1e-12)
    demoted = RP3Beta(data, alpha=1.0, beta=1.0)
    np.testing.assert_allclose(demoted.weights.toarray()[:3, :3], walk / [3, 2, 1], atol=1e-12)
    assert not demoted.weights.toarray()[3].any()  # d: never seen, never reached
    # u3 (a only): b 5/18 against c 1/9 plain; 5/36 against 1/9 demoted: b first either way.
    assert plain.recommend("u3", 2) == demoted.recommend("u3", 2) == ["b", "c"]
    # alpha squares every step: W_ab = 1/9 * 1/9 + 1/9 * 1/4 = 13/324.
    squared = RP3Beta(data, alpha=2.0, beta=0.0)
    assert squared.weights[0, 1] == pytest.approx(13 / 324)


def test_rp3beta_keeps_each_items_strongest_neighbours_only() -> None:
    data = _data([("u1", "a"), ("u1", "b"), ("u1", "c"), ("u2", "a"), ("u2", "b"), ("u3", "a")])
    pruned = RP3Beta(data, alpha=1.0, beta=0.0, neighbours=1)
    # Row a keeps b (5/18 > 1/9); row c's tie (1/3, 1/3) keeps the first column, a.
    expected = [[0, 5 / 18, 0], [5 / 12, 0, 0], [1 / 3, 0, 0]]
    np.testing.assert_allclose(pruned.weights.toarray()[:3, :3], expected, atol=1e-12)
