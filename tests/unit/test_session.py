from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from recstream.compose import session_config
from recstream.core.collab import CollabModel
from recstream.core.settings import DEFAULT_EVENT_WEIGHTS, load_settings
from recstream.core.state import SEEN_FOR_A_WHILE, BatchEffects, UserState, hidden_above
from recstream.schemas.events import InteractionEvent
from recstream.streams import session
from recstream.streams.interactions import LateEventsLog
from recstream.streams.reference import reference_apply_batch, reference_vector
from recstream.streams.session import (
    MAX_COLLAB_ITEMS,
    MAX_GUARD_IDS,
    POPULARITY_REBASE_HALF_LIVES,
    apply_batch,
    popularity_landmark,
    user_groups,
)

DIM = 8
HOUR = 3600 * 1000
CONFIG = session_config(
    load_settings(
        {},
        session_half_life_ms=HOUR,
        allowed_lateness_ms=HOUR,
        covis_window=3,
        next_window=3,
        popularity_half_life_ms=24 * HOUR,
    )
)
T0 = 1_700_000_000_000


def _vectors(n: int = 6, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        v = rng.normal(size=DIM).astype(np.float32)
        out[f"i{i}"] = v / np.linalg.norm(v)
    return out


def _ev(
    n: int, user: str, item: str, kind: str, t: int, value: float | None = None
) -> InteractionEvent:
    return InteractionEvent(f"e{n}", user, item, kind, t, value=value)


def _run(events: list[InteractionEvent], states: dict[str, UserState] | None = None, vectors=None):  # type: ignore[no-untyped-def]
    vectors = _vectors() if vectors is None else vectors
    return apply_batch(
        events,
        states or {},
        vectors,
        {"i0": "Drama", "i1": "Comedy"},
        CONFIG,
        "model-a",
        DIM,
        landmark=T0,
    )


def test_vector_matches_the_formula_with_decay_and_negative_weights() -> None:
    vectors = _vectors()
    events = [
        _ev(1, "u", "i0", "view", T0),
        _ev(2, "u", "i1", "purchase", T0 + 10 * 60 * 1000),
        _ev(3, "u", "i2", "dislike", T0 + 3 * HOUR),  # long gap: decay matters
        _ev(4, "u", "i3", "rating", T0 + 4 * HOUR, value=4.5),
        _ev(5, "u", "i4", "skip", T0 + 4 * HOUR + 1),
    ]
    got = _run(events, vectors=vectors).states["u"].vector
    expected = reference_vector(events, vectors, DEFAULT_EVENT_WEIGHTS, HOUR)
    assert got is not None
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # A negative event pushes the vector away from its item.
    before = reference_vector(events[:2], vectors, DEFAULT_EVENT_WEIGHTS, HOUR)
    after = reference_vector(events[:3], vectors, DEFAULT_EVENT_WEIGHTS, HOUR)
    assert after @ vectors["i2"] < before @ vectors["i2"]


def test_splitting_into_batches_gives_the_same_state() -> None:
    events = [_ev(n, f"u{n % 3}", f"i{n % 6}", "click", T0 + n * 60_000) for n in range(30)]
    whole = _run(events)
    first = _run(events[:13])
    second = _run(events[13:], states=first.states)
    for user, state in whole.states.items():
        np.testing.assert_allclose(second.states[user].vector, state.vector, atol=1e-6)
        assert second.states[user].count == state.count
        assert second.states[user].recent_items == state.recent_items


def test_duplicates_and_events_older_than_the_lateness_are_not_applied() -> None:
    first = _run([_ev(1, "u", "i0", "click", T0), _ev(2, "u", "i1", "click", T0 + 2 * HOUR)])
    state = first.states["u"]
    again = _run(
        [
            _ev(2, "u", "i1", "click", T0 + 2 * HOUR),  # replayed
            _ev(9, "u", "i2", "click", T0 + 30 * 60 * 1000),
        ],  # 90 min late > 1 h allowed
        states={"u": state},
    )
    assert again.outcomes == {"duplicate": 1, "too_late": 1}
    np.testing.assert_array_equal(again.states["u"].vector, state.vector)
    assert again.popularity == {}
    assert again.seen == {}


def test_a_late_event_within_the_lateness_is_folded_in_with_its_age() -> None:
    vectors = _vectors()
    first = _run([_ev(1, "u", "i0", "click", T0 + HOUR)], vectors=vectors)
    late = _run([_ev(2, "u", "i1", "click", T0 + HOUR // 2)], states=first.states, vectors=vectors)
    assert late.outcomes == {"applied": 1}
    x = vectors["i0"].astype(np.float64) + 0.5**0.5 * vectors["i1"]
    np.testing.assert_allclose(late.states["u"].vector, x / np.linalg.norm(x), atol=1e-6)
    assert late.states["u"].last_time == T0 + HOUR  # the watermark does not move back


def test_item_without_vector_still_counts_for_history_and_popularity() -> None:
    effects = _run([_ev(1, "u", "new-item", "click", T0)])
    assert effects.vector_missing == 1
    assert effects.states["u"].vector is None
    assert effects.seen == {"u": {"new-item": T0}}
    assert effects.popularity == {"new-item": 1.0}


def test_seen_popularity_and_covisitation() -> None:
    events = [
        _ev(1, "u", "i0", "click", T0),
        _ev(2, "u", "i1", "view", T0 + 1),
        _ev(3, "u", "i2", "dislike", T0 + 2),
        _ev(4, "u", "i3", "click", T0 + 3),
        _ev(5, "v", "i0", "purchase", T0 + 4),
    ]
    effects = _run(events)
    assert effects.seen["u"] == {"i0": T0, "i1": T0 + 1, "i2": T0 + 2, "i3": T0 + 3}
    assert set(effects.popularity) == {"i0", "i1", "i3"}  # a dislike adds no popularity
    assert effects.popularity["i0"] == pytest.approx(2 * 2 ** (4 / CONFIG.popularity_half_life_ms))
    assert effects.category_popularity[("Drama", "i0")] == pytest.approx(effects.popularity["i0"])
    # co-visits among u's positive items i0, i1, i3 (window 3), both directions
    positive = ("i0", "i1", "i3")
    assert effects.covisits == {a: {b: 1.0 for b in positive if b != a} for a in positive}
    assert effects.states["u"].recent_items == ["i0", "i1", "i3"]
    # transitions: each positive item follows every earlier one, one way only
    assert effects.transitions == {"i0": {"i1": 1.0, "i3": 1.0}, "i1": {"i3": 1.0}}


def test_transitions_reach_further_back_than_co_visits_and_only_forward() -> None:
    """RECSTREAM_NEXT_WINDOW 3 against a co-visit window of 1: i3 follows i0, i1 and i2, but is
    co-visited with i2 alone; the recent window keeps the longer of the two."""
    config = dataclasses.replace(CONFIG, covis_window=1, next_window=3)
    events = [_ev(n, "u", f"i{n}", "click", T0 + n) for n in range(5)]
    effects = apply_batch(events, {}, _vectors(), {}, config, "model-a", DIM, T0)
    assert effects.transitions["i0"] == {"i1": 1.0, "i2": 1.0, "i3": 1.0}
    assert effects.transitions["i3"] == {"i4": 1.0}
    assert "i0" not in effects.transitions.get("i4", {})  # never backwards
    assert effects.covisits["i3"] == {"i2": 1.0, "i4": 1.0}
    assert effects.states["u"].recent_items == ["i2", "i3", "i4"]
    off = dataclasses.replace(config, next_window=0)
    assert apply_batch(events, {}, _vectors(), {}, off, "model-a", DIM, T0).transitions == {}


def test_the_seen_policy_scores_an_item_by_its_longest_hiding_event() -> None:
    config = dataclasses.replace(CONFIG, seen_hide_ms={"view": HOUR, "purchase": 24 * HOUR})
    events = [
        _ev(1, "u", "i0", "view", T0),
        _ev(2, "u", "i0", "view", T0 + 10),  # a later view hides i0 a little longer
        _ev(3, "u", "i1", "view", T0 + 1),
        _ev(4, "u", "i1", "click", T0 + 2),  # a click is not named: i1 is hidden for good
        _ev(5, "u", "i1", "view", T0 + 3),  # and stays so
        _ev(6, "u", "i2", "purchase", T0 + 4),
    ]
    effects = apply_batch(events, {}, _vectors(), {}, config, "model-a", DIM, landmark=T0)
    assert effects.seen["u"] == {
        "i0": T0 + 10 + HOUR - SEEN_FOR_A_WHILE,
        "i1": T0 + 2,
        "i2": T0 + 4 + 24 * HOUR - SEEN_FOR_A_WHILE,
    }
    assert hidden_above(T0 + 11 + HOUR) >= effects.seen["u"]["i0"]  # back an hour after
    assert hidden_above(T0 + 9 + HOUR) < effects.seen["u"]["i0"]  # not before
    assert _run(events).seen["u"] == {"i0": T0 + 10, "i1": T0 + 3, "i2": T0 + 4}  # no policy


def test_a_new_model_version_resets_the_session_vector() -> None:
    old = UserState(
        vector=np.ones(DIM, dtype=np.float32) / np.sqrt(DIM), last_time=T0, model="model-old"
    )
    effects = _run([_ev(1, "u", "i0", "click", T0 + 1)], states={"u": old})
    np.testing.assert_allclose(effects.states["u"].vector, _vectors()["i0"], atol=1e-6)
    assert effects.states["u"].model == "model-a"


def test_popularity_landmark_moves_only_when_scores_would_grow_too_large() -> None:
    half_life = CONFIG.popularity_half_life_ms
    assert popularity_landmark(None, T0, half_life) == T0
    assert popularity_landmark(T0, T0 + 10 * half_life, half_life) == T0
    far = T0 + (POPULARITY_REBASE_HALF_LIVES + 1) * half_life
    assert popularity_landmark(T0, far, half_life) == far


def test_guard_ids_are_capped_and_raise_the_floor() -> None:
    events = [_ev(n, "u", "i0", "view", T0 + n) for n in range(1100)]
    state = _run(events).states["u"]
    assert len(state.guard_ids) == 1024
    assert state.floor == T0 + 1100 - 1024
    replay = _run([events[10]], states={"u": state})
    assert replay.outcomes == {"too_late_guard_cap": 1}  # within the lateness, below the cap


def test_many_interleaved_users_each_match_the_formula() -> None:
    vectors = _vectors(12)
    events = [
        _ev(n, f"u{n % 40}", f"i{(n * 7) % 12}", ("click", "view", "dislike")[n % 3], T0 + n * 1000)
        for n in range(400)
    ]
    effects = _run(events, vectors=vectors)
    for user, state in effects.states.items():
        mine = [e for e in events if e.user_id == user]
        expected = reference_vector(mine, vectors, DEFAULT_EVENT_WEIGHTS, HOUR)
        np.testing.assert_allclose(state.vector, expected, atol=1e-5)


def test_collab_history_sums_weights_and_each_changed_user_is_folded_in() -> None:
    rng = np.random.default_rng(5)
    items = [f"i{i}" for i in range(6)]
    model = CollabModel(7, items, rng.normal(size=(6, 3)).astype(np.float32), 0.1, 2.0)
    events = [
        _ev(1, "u", "i0", "click", T0),
        _ev(2, "u", "i0", "like", T0 + 1),
        _ev(3, "u", "i1", "view", T0 + 2),
        _ev(4, "u", "i1", "dislike", T0 + 3),  # 0.5 - 2 < 0: out of the history
        _ev(5, "w", "i2", "skip", T0 + 4),  # only negative: no history, no factor
    ]
    effects = apply_batch(events, {}, _vectors(), {}, CONFIG, "model-a", DIM, T0, model)
    u, w = effects.states["u"], effects.states["w"]
    assert u.collab_items == {"i0": 3.0}
    assert u.collab_version == 7
    np.testing.assert_allclose(u.collab_vector, model.fold_in({"i0": 3.0}))
    assert w.collab_items == {} and w.collab_vector is None
    # without a model the history still grows, and no factor is made
    plain = _run(events)
    assert plain.states["u"].collab_items == {"i0": 3.0}
    assert plain.states["u"].collab_vector is None


def test_collab_history_keeps_a_users_strongest_items() -> None:
    """Past MAX_COLLAB_ITEMS distinct items, the weakest go (ties by item id), once per batch."""
    events = [
        _ev(n, "u", f"x{n:04d}", "purchase" if n % 10 == 0 else "view", T0 + n)
        for n in range(MAX_COLLAB_ITEMS + 100)
    ]
    kept = _run(events).states["u"].collab_items
    assert len(kept) == MAX_COLLAB_ITEMS
    purchases = {f"x{n:04d}" for n in range(0, MAX_COLLAB_ITEMS + 100, 10)}
    assert purchases <= kept.keys()  # weight 3 beats weight 0.5
    views = sorted(kept.keys() - purchases)
    assert (
        views == sorted(f"x{n:04d}" for n in range(MAX_COLLAB_ITEMS + 100) if n % 10)[-len(views) :]
    )
    again = _run(events[:300], None)
    rest = _run(events[300:], {"u": again.states["u"]}).states["u"].collab_items
    assert rest == kept  # split into batches: the same history


def test_user_groups_keep_each_users_events_together_and_in_order() -> None:
    events = [
        _ev(n, user, "i0", "view", T0 + n)
        for n, user in enumerate(["a", "b", "a", "c", "c", "d", "b", "e", "a", "f"])
    ]
    groups = user_groups(events, 4)
    assert [[e.event_id for e in g] for g in groups] == [
        ["e0", "e1", "e2", "e6", "e8"],  # a (3 events) and b (2): closed at 5 >= 4
        ["e3", "e4", "e5", "e7"],  # c (2), d, e
        ["e9"],  # f
    ]
    assert user_groups(events, 10) == [events]
    assert [len(g) for g in user_groups(events, 1)] == [3, 2, 2, 1, 1, 1]


def test_applying_user_groups_one_by_one_adds_up_to_the_whole_batch() -> None:
    rng = np.random.default_rng(9)
    kinds = ["view", "click", "purchase", "dislike", "like"]
    events = [
        _ev(n, f"u{rng.integers(5)}", f"i{rng.integers(6)}", kinds[n % 5], T0 + n * 1000)
        for n in range(60)
    ]
    whole = _run(events)
    parts = [_run(group) for group in user_groups(events, 10)]
    assert len(parts) > 2
    by_user = {user: state for part in parts for user, state in part.states.items()}
    assert by_user.keys() == whole.states.keys()
    for user, state in whole.states.items():
        assert state.vector is not None and by_user[user].vector is not None
        np.testing.assert_allclose(by_user[user].vector, state.vector, atol=1e-6)
        assert by_user[user].guard_ids == state.guard_ids
    popularity: dict[str, float] = {}
    covisits: dict[tuple[str, str], float] = {}
    for part in parts:
        for item, boost in part.popularity.items():
            popularity[item] = popularity.get(item, 0.0) + boost
        for item, others in part.covisits.items():
            for other, count in others.items():
                covisits[item, other] = covisits.get((item, other), 0.0) + count
    assert popularity == pytest.approx(whole.popularity)
    expected = {(i, o): n for i, others in whole.covisits.items() for o, n in others.items()}
    assert covisits == expected


def _random_stream(
    seed: int, count: int, late_events: bool = True
) -> tuple[list[InteractionEvent], dict[str, UserState]]:
    """A stream with everything the guards and windows must handle: interleaved users, late and
    too-late events, ids repeated (for the same user and for another), ratings, items without a
    vector; and prior states with guard ids, recent windows, vectors of this model and another."""
    rng = np.random.default_rng(seed)
    kinds = [*DEFAULT_EVENT_WEIGHTS, "rating"]
    events = []
    for n in range(count):
        kind = kinds[rng.integers(len(kinds))]
        # Some late, some too late; on a 10-minute grid, so some fall on the lateness bound.
        jitter = int(rng.integers(-12, 2)) * 600_000 if late_events else 0
        event_id = f"e{rng.integers(n + 1)}" if rng.random() < 0.15 else f"e{n}"
        item = f"i{rng.integers(8)}" if rng.random() < 0.9 else f"x{rng.integers(3)}"
        events.append(
            InteractionEvent(
                event_id,
                f"u{rng.integers(6)}",
                item,
                kind,
                T0 + n * 600_000 + jitter,
                value=float(rng.integers(1, 6)) if kind == "rating" else None,
            )
        )
    vectors = _vectors(8, seed)
    states = {
        "u0": UserState(
            vectors["i1"],
            T0,
            T0 - HOUR,
            3,
            {"e2": T0, "old": T0 - 10},
            ["i4", "x1", "i2"],
            "model-a",
            {"i4": 2.0},
        ),
        "u1": UserState(vectors["i2"], T0 + HOUR, 0, 1, {}, ["i0"], "model-old"),
        "u2": UserState(None, T0 - 3 * HOUR, 0, 0, {}, ["i1", "i3", "i5", "i6"], "model-a"),
        # at the caps: its ids and its history overflow in the batch (ties broken by id)
        "u5": UserState(
            vectors["i0"],
            T0,
            T0 - HOUR,
            1020,
            {f"g{k}": T0 - k * 3000 for k in range(MAX_GUARD_IDS - 4)},
            [],
            "model-a",
            {f"h{k * 7 % (MAX_COLLAB_ITEMS - 2):03d}": 1.0 for k in range(MAX_COLLAB_ITEMS - 2)},
        ),
    }
    return events, states


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(("window", "lateness"), [(0, HOUR), (1, HOUR), (3, HOUR), (3, 999 * HOUR)])
@pytest.mark.parametrize("next_window", [0, 2, 5])
def test_the_compiled_pass_matches_a_plain_loop_over_the_events(
    seed: int, window: int, lateness: int, next_window: int
) -> None:
    """With a lateness of 999 hours nothing gets too late by time: u5's guard ids outgrow
    their cap, which raises its floor instead."""
    events, states = _random_stream(seed, 300)
    vectors = _vectors(8, seed)
    config = dataclasses.replace(
        CONFIG, allowed_lateness_ms=lateness, covis_window=window, next_window=next_window
    )
    categories = {"i0": "Drama", "i3": "Comedy"}
    effects = apply_batch(events, states, vectors, categories, config, "model-a", DIM, T0)
    expected = reference_apply_batch(events, states, vectors, categories, config, "model-a", T0)
    _assert_same_effects(effects, expected)
    assert effects.outcomes["applied"] and effects.outcomes["duplicate"]  # the stream has all
    assert effects.outcomes["too_late"] or lateness > HOUR
    assert states["u0"].guard_ids == {"e2": T0, "old": T0 - 10}  # the inputs are not changed
    assert len(states["u5"].guard_ids) == MAX_GUARD_IDS - 4
    capped = effects.states["u5"]
    assert len(capped.collab_items) == MAX_COLLAB_ITEMS  # its history did overflow
    assert (len(capped.guard_ids) == MAX_GUARD_IDS) == (lateness > HOUR)


def _assert_same_effects(effects: BatchEffects, expected: BatchEffects) -> None:
    assert effects.outcomes == expected.outcomes
    assert effects.seen == expected.seen
    assert effects.new_guards == expected.new_guards
    assert effects.covisits == expected.covisits
    assert effects.transitions == expected.transitions
    assert effects.popularity == pytest.approx(expected.popularity, rel=1e-12)
    assert effects.category_popularity == pytest.approx(expected.category_popularity, rel=1e-12)
    assert (effects.newest_time, effects.vector_missing) == (
        expected.newest_time,
        expected.vector_missing,
    )
    assert effects.states.keys() == expected.states.keys()
    for user, state in effects.states.items():
        want = expected.states[user]
        assert (state.last_time, state.floor, state.count, state.model) == (
            want.last_time,
            want.floor,
            want.count,
            want.model,
        )
        assert (state.guard_ids, state.recent_items) == (want.guard_ids, want.recent_items)
        assert state.collab_items == pytest.approx(want.collab_items)
        if want.vector is None:
            assert state.vector is None
        else:
            np.testing.assert_allclose(state.vector, want.vector, atol=1e-5)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("late_events", [True, False])
@pytest.mark.parametrize("lateness", [HOUR, 999 * HOUR])
def test_batches_in_a_row_match_the_plain_loop(
    seed: int, late_events: bool, lateness: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """States carried from batch to batch: from the second batch on, a user's guard ids are in
    time order, and without late events the cheaper settle (a cut prefix) is the one taken."""
    ordered_settles = []
    settle = session._settle_ordered_guards
    monkeypatch.setattr(
        session,
        "_settle_ordered_guards",
        lambda *args: ordered_settles.append(1) or settle(*args),
    )
    events, states = _random_stream(seed, 600, late_events=late_events)
    vectors = _vectors(8, seed)
    config = dataclasses.replace(CONFIG, allowed_lateness_ms=lateness)
    mine, theirs = dict(states), dict(states)
    for start in range(0, len(events), 100):
        batch = events[start : start + 100]
        effects = apply_batch(batch, mine, vectors, {}, config, "model-a", DIM, T0)
        expected = reference_apply_batch(batch, theirs, vectors, {}, config, "model-a", T0)
        _assert_same_effects(effects, expected)
        mine |= effects.states
        theirs |= expected.states
    assert ordered_settles or late_events
    assert len(ordered_settles) > 20 or late_events


def test_late_drops_over_the_threshold_are_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    late = LateEventsLog(per_minute=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        late.add({"too_late": 6, "applied": 100})
        late.add({"too_late_guard_cap": 4})
        assert not caplog.records  # 10: not above the threshold
        late.add({"too_late": 1})
        late.add({"too_late": 50})
        assert len(caplog.records) == 1  # once in the minute
        assert "11 events dropped as too late" in caplog.records[0].getMessage()
        now[0] = 61.0
        late.add({"too_late": 11})
        assert len(caplog.records) == 2  # a new minute
