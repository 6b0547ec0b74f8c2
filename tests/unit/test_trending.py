"""Trending by velocity (recstream.core.trending) by hand, and the boosts the interaction
processor's batch step adds up for it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from recstream.compose import session_config
from recstream.core.settings import load_settings
from recstream.core.trending import velocities
from recstream.schemas.events import InteractionEvent
from recstream.streams.session import apply_batch

pytestmark = pytest.mark.unit

HOUR = 3600 * 1000
L = 1_700_000_000_000


def test_velocity_is_the_recent_rate_over_the_usual_rate() -> None:
    short = {"burst": 4.0, "rare": 1.0, "steady": 2.0}
    long = {"burst": 8.0, "rare": 1.0, "steady": 16.0}
    # At the landmark nothing has decayed: velocity = (short / long) * (8 h / 1 h).
    found = velocities(short, long, L, L, (HOUR, 8 * HOUR), min_recent=2.0)
    assert found == {"burst": 4.0, "steady": 1.0}  # "rare" has too few recent events
    assert list(found) == ["burst", "steady"]
    # An hour later the recent count has halved, the usual one lost 2^(-1/8).
    later = velocities(short, long, L, L + HOUR, (HOUR, 8 * HOUR), min_recent=1.0)
    assert later["burst"] == pytest.approx((4 * 0.5) / (8 * 2 ** (-1 / 8)) * 8)
    assert "rare" not in later  # 0.5 recent events now


def test_the_batch_step_adds_short_half_life_boosts_for_what_popularity_counts() -> None:
    config = dataclasses.replace(
        session_config(load_settings({})), trending_half_life_ms=HOUR, covis_window=0
    )
    events = [
        InteractionEvent("e1", "u", "a", "click", L),
        InteractionEvent("e2", "v", "a", "view", L + HOUR),
        InteractionEvent("e3", "w", "b", "dislike", L),  # popularity skips it: so does trending
    ]
    vectors = {i: np.ones(4, dtype=np.float32) / 2 for i in "ab"}
    effects = apply_batch(events, {}, vectors, {}, config, "m", 4, landmark=L)
    assert effects.trending == {"a": pytest.approx(1.0 + 2.0)}
    assert set(effects.trending) == set(effects.popularity)
    assert config.landmark_half_life_ms == HOUR  # the landmark moves by the shorter half-life
