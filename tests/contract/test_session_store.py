"""The session-store contract: every backend of recstream.core.ports.SessionStore behaves alike.

Run against the in-memory store (the offline evaluation's) and the Redis store through both of
its write paths: the Lua script and the native command of recstream's module; and against a
real three-node Redis Cluster, where the batch goes as one script call per slot. The Redis
cases need the real services (`recstream infra up`, the cluster the tests start), so they are
also marked integration."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from recstream.core.ports import SessionStore
from recstream.core.settings import Settings
from recstream.core.state import SEEN_FOR_A_WHILE, BatchEffects, UserState
from recstream.infra.stores.memory_store import InMemorySessionStore
from recstream.infra.stores.registry import redis_session_store

HOUR = 3600 * 1000
T0 = 1_600_000_000_000
HALF_LIFE_MS = 2 * HOUR
TRENDING = (HOUR // 4, 1.0)  # half-life, least decayed recent events
OpenStore = Callable[..., SessionStore]


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis-script", marks=pytest.mark.integration),
        pytest.param("redis-native", marks=pytest.mark.integration),
        pytest.param("redis-cluster", marks=pytest.mark.integration),
    ]
)
def open_store(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> Iterator[OpenStore]:
    """Opens a store of the backend under test with the given limits."""
    opened: list[SessionStore] = []

    def open_one(history_cap: int = 100, covis_max: int = 50) -> SessionStore:
        store = _backend(request, unique, history_cap, covis_max)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


def _backend(
    request: pytest.FixtureRequest, unique: str, history_cap: int, covis_max: int
) -> SessionStore:
    if request.param == "memory":
        return InMemorySessionStore(history_cap, covis_max, HALF_LIFE_MS, TRENDING)
    infra: Settings = request.getfixturevalue("infra")
    if request.param == "redis-cluster":
        infra = request.getfixturevalue("redis_cluster").client_settings()
    native = request.param == "redis-native"
    settings = infra.isolated(
        unique,
        history_cap=history_cap,
        covis_max_neighbours=covis_max,
        popularity_half_life_ms=HALF_LIFE_MS,
        trending_half_life_ms=TRENDING[0],
        trending_min_recent=TRENDING[1],
        redis_write_module=native,
    )
    store = redis_session_store(settings)
    if native:  # recstream's Redis loads the module: the native path must be the one tested
        assert store.has_native_write()
    request.addfinalizer(store.delete_namespace)
    return store


def _effects(landmark: int = T0, **parts: object) -> BatchEffects:
    return BatchEffects(landmark=landmark, newest_time=landmark, **parts)  # type: ignore[arg-type]


def _state(**changes: object) -> UserState:
    vector = np.array([0.6, 0.8, 0.0], dtype=np.float32)
    state = UserState(
        vector=vector,
        last_time=T0 + 5,
        floor=T0 - HOUR,
        count=3,
        guard_ids={"e1": T0 + 1, "e2": T0 + 5},
        recent_items=["a", "b", "c"],
        model="items__m__3",
        collab_items={"a": 1.0, "c": 2.5},
        collab_vector=np.array([0.25, -0.5], dtype=np.float32),
        collab_version=7,
    )
    for name, value in changes.items():
        setattr(state, name, value)
    return state


def test_a_written_state_loads_back_whole(open_store: OpenStore) -> None:
    store = open_store()
    written = _state()
    store.write_batch(
        _effects(states={"u1": written}, new_guards={"u1": dict(written.guard_ids)}), None
    )
    loaded = store.load_states(["u1", "nobody"])
    assert list(loaded) == ["u1"]
    state = loaded["u1"]
    assert (state.last_time, state.floor, state.count) == (T0 + 5, T0 - HOUR, 3)
    assert state.guard_ids == {"e1": T0 + 1, "e2": T0 + 5}
    assert state.recent_items == ["a", "b", "c"]
    assert (state.model, state.collab_items, state.collab_version) == (
        "items__m__3",
        {"a": 1.0, "c": 2.5},
        7,
    )
    assert state.vector is not None and state.collab_vector is not None
    np.testing.assert_allclose(state.vector, written.vector)
    np.testing.assert_allclose(state.collab_vector, written.collab_vector)


def test_a_state_without_vectors_loads_back_without_them(open_store: OpenStore) -> None:
    store = open_store()
    store.write_batch(
        _effects(states={"u1": _state(vector=None, collab_vector=None, guard_ids={})}), None
    )
    state = store.load_states(["u1"])["u1"]
    assert state.vector is None and state.collab_vector is None and state.count == 3


def test_a_user_view_carries_the_state_without_its_guards(open_store: OpenStore) -> None:
    store = open_store()
    written = _state()
    store.write_batch(
        _effects(
            states={"u1": written},
            new_guards={"u1": dict(written.guard_ids)},
            seen={"u1": {"a": T0 + 1}},
        ),
        None,
    )
    view = store.user_view("u1")
    assert view.state is not None
    assert (view.state.guard_ids, view.state.count) == ({}, 3)
    assert view.seen == {"a": T0 + 1}
    assert view.last_response is None
    nobody = store.user_view("nobody")
    assert (nobody.state, nobody.seen, nobody.last_response) == (None, {}, None)


def test_seen_keeps_each_items_newest_time_and_the_newest_history_cap_items(
    open_store: OpenStore,
) -> None:
    store = open_store(history_cap=3)
    store.write_batch(_effects(seen={"u1": {"a": T0 + 5, "b": T0 + 1}}), None)
    store.write_batch(_effects(seen={"u1": {"a": T0 + 2, "c": T0 + 7, "d": T0 + 8}}), T0)
    assert store.seen("u1") == {"a": T0 + 5, "c": T0 + 7, "d": T0 + 8}


def test_a_user_view_leaves_out_items_whose_hiding_while_is_over(open_store: OpenStore) -> None:
    store = open_store()
    now = int(time.time() * 1000)
    seen = {
        "over": now - HOUR - SEEN_FOR_A_WHILE,  # hidden until an hour ago
        "running": now + HOUR - SEEN_FOR_A_WHILE,  # hidden for another hour
        "for-good": T0,  # an event time: hidden for good
    }
    store.write_batch(_effects(states={"u": _state()}, seen={"u": seen}), None)
    assert set(store.user_view("u").seen) == {"running", "for-good"}
    assert store.seen("u") == seen  # every entry is kept (the history cap trims them)


def test_trending_ranks_items_by_velocity_now(open_store: OpenStore) -> None:
    store = open_store()
    now = int(time.time() * 1000)
    popularity = {"burst": 2.0, "steady": 40.0, "rare": 1.0}
    trending = {"burst": 4.0, "steady": 5.0, "rare": 0.5}  # "rare": under the floor of 1
    store.write_batch(_effects(landmark=now, popularity=popularity, trending=trending), None)
    found = store.trending()
    assert list(found) == ["burst", "steady"]
    ratio = HALF_LIFE_MS / TRENDING[0]  # (recent / usual) * (long / short half-life)
    assert found["burst"] == pytest.approx(4.0 / 2.0 * ratio, rel=1e-3)
    assert found["steady"] == pytest.approx(5.0 / 40.0 * ratio, rel=1e-3)


def test_popularity_adds_up_per_item_and_per_category(open_store: OpenStore) -> None:
    store = open_store()
    store.write_batch(
        _effects(
            popularity={"x": 1.0, "y": 2.0, "z": 0.5},
            category_popularity={("films", "x"): 1.0, ("films", "z"): 0.5},
        ),
        None,
    )
    store.write_batch(
        _effects(popularity={"x": 2.5}, category_popularity={("films", "z"): 2.0}), T0
    )
    assert list(store.popularity(limit=2).items()) == [("x", 3.5), ("y", 2.0)]
    assert store.popularity_of(["x", "unknown"]) == {"x": 3.5, "unknown": 0.0}
    assert store.popularity(limit=10, category="films") == {"z": 2.5, "x": 1.0}
    assert store.popularity(category="unknown") == {}
    assert store.popularity_landmark() == T0


def test_moving_the_landmark_rescales_every_popularity_score(open_store: OpenStore) -> None:
    store = open_store()
    store.write_batch(
        _effects(popularity={"x": 4.0}, category_popularity={("films", "x"): 8.0}), None
    )
    moved = T0 + HALF_LIFE_MS  # one half-life later: every score halves
    store.write_batch(_effects(landmark=moved, popularity={"y": 1.0}), T0)
    assert store.popularity_landmark() == moved
    assert store.popularity() == pytest.approx({"x": 2.0, "y": 1.0})
    assert store.popularity(category="films") == pytest.approx({"x": 4.0})


def test_moving_the_landmark_keeps_every_velocity(open_store: OpenStore) -> None:
    store = open_store()
    now = int(time.time() * 1000)
    store.write_batch(_effects(landmark=now, popularity={"x": 4.0}, trending={"x": 4.0}), None)
    before = store.trending()["x"]
    moved = now + TRENDING[0]  # a trending half-life later: its scores halve, the others less
    store.write_batch(_effects(landmark=moved, popularity={}, trending={}), now)
    assert store.trending()["x"] == pytest.approx(before, rel=1e-3)


def test_covisitation_adds_up_and_is_cut_to_its_top_once_a_quarter_over(
    open_store: OpenStore,
) -> None:
    store = open_store(covis_max=4)  # cut back to 4 once a set holds 5 + 1
    first = {"b": 5.0, "c": 4.0, "d": 3.0, "e": 2.0, "f": 1.0}
    store.write_batch(_effects(covisits={"a": first}), None)
    assert store.covisitation("a") == first  # 5 is within a quarter over 4: kept
    store.write_batch(_effects(covisits={"a": {"g": 0.5, "f": 0.25}, "b": {"a": 1.0}}), T0)
    assert store.covisitation("a") == {"b": 5.0, "c": 4.0, "d": 3.0, "e": 2.0}
    assert list(store.covisitation("a", limit=2)) == ["b", "c"]
    assert store.covisitation_many(["a", "b", "none"], limit=1) == {
        "a": {"b": 5.0},
        "b": {"a": 1.0},
        "none": {},
    }


def test_transitions_add_up_apart_from_covisits_and_are_cut_like_them(
    open_store: OpenStore,
) -> None:
    store = open_store(covis_max=4)
    first = {"b": 5.0, "c": 4.0, "d": 3.0, "e": 2.0, "f": 1.0}
    store.write_batch(_effects(transitions={"a": first}, covisits={"a": {"z": 1.0}}), None)
    store.write_batch(_effects(transitions={"a": {"g": 0.5, "f": 0.25, "b": 1.0}}), T0)
    assert store.transitions_many(["a", "b"], limit=10) == {
        "a": {"b": 6.0, "c": 4.0, "d": 3.0, "e": 2.0},
        "b": {},
    }
    assert list(store.transitions_many(["a"], limit=2)["a"]) == ["b", "c"]
    assert store.covisitation("a") == {"z": 1.0}  # the two signals are kept apart


def test_the_last_response_is_remembered_per_user(open_store: OpenStore) -> None:
    store = open_store()
    store.remember_response("u1", b'{"items": ["a"]}', 60)
    assert store.last_response("u1") == b'{"items": ["a"]}'
    assert store.user_view("u1").last_response == b'{"items": ["a"]}'
    assert store.last_response("u2") is None


def test_an_answering_store_says_so(open_store: OpenStore) -> None:
    assert open_store().ping() is True
