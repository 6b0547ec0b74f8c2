"""The evaluation's baselines against results computed by hand on a tiny matrix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recstream.evaluation.baselines import Ease, Interactions
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
