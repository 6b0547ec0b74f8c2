"""Trending by velocity: an item's recent rate of engagement against its usual one.

Popularity is kept twice, forward-decayed against the same landmark L: over the long half-life
h_long (RECSTREAM_POPULARITY_HALF_LIFE_MS) and over the short one h_short
(RECSTREAM_TRENDING_HALF_LIFE_MS), each stored as S = sum of 2^((t - L) / h). At time now, the
decayed count D = S * 2^(-(now - L) / h) is about the events of the last h / ln 2, so the rate is
D ln 2 / h, and the velocity is the ratio of the two rates: (D_short / D_long) (h_long / h_short).
A steady item has velocity 1; one engaged with four times as often lately as usual, 4.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping

TRENDING_AT_LEAST = 2.0  # the velocity from which "trending" is a true reason
TRENDING_POOL = 500  # the items most engaged with lately, among which velocity ranks


def velocities(
    short: Mapping[str, float],
    long: Mapping[str, float],
    landmark: int,
    now_ms: int,
    half_lives_ms: tuple[int, int],
    min_recent: float,
) -> dict[str, float]:
    """Each item of `short` with at least `min_recent` decayed recent events, by velocity (best
    first, ties by item id). Scores are the stored S of both sets; half_lives_ms is (short,
    long)."""
    h_short, h_long = half_lives_ms
    decay_short = 2.0 ** (-(now_ms - landmark) / h_short)
    decay_long = 2.0 ** (-(now_ms - landmark) / h_long)
    found = {}
    for item, score in short.items():
        recent = score * decay_short
        usual = long.get(item, 0.0) * decay_long
        if recent >= min_recent and usual > 0:
            found[item] = (recent / usual) * (h_long / h_short)
    return dict(sorted(found.items(), key=lambda pair: (-pair[1], pair[0])))


def trending_now(
    short: Mapping[str, float],
    long: Mapping[str, float],
    landmark: int,
    half_lives_ms: tuple[int, int],
    min_recent: float,
    limit: int,
) -> dict[str, float]:
    """The `limit` items of `short` with the highest velocity now (the wall clock): what every
    store's `trending` answers from its two reads."""
    now_ms = int(time.time() * 1000)
    found = velocities(short, long, landmark, now_ms, half_lives_ms, min_recent)
    return dict(itertools.islice(found.items(), limit))
