"""The in-memory session store (offline evaluation) against the Redis store (services): the same
batches must leave the same readable state in both, trimming and popularity rebase included."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
import redis

from recstream.compose import session_config
from recstream.core.ports import SessionStore, UserView
from recstream.core.settings import Settings, load_settings
from recstream.core.state import UserState
from recstream.infra.stores.memory_store import InMemorySessionStore
from recstream.infra.stores.registry import redis_session_store
from recstream.infra.stores.session_store import _LOAD_CHUNK, RedisSessionStore
from recstream.schemas.events import InteractionEvent
from recstream.streams.session import MAX_GUARD_IDS, SessionConfig, apply_batch
from tests.integration.ingest_helpers import delete_namespace, isolated_settings

HOUR = 3600 * 1000
T0 = 1_600_000_000_000
ITEMS = [f"item{n}" for n in range(24)]
TYPES = ["view", "click", "like", "purchase", "dislike", "skip"]
DEFAULT_CONFIG = session_config(load_settings({}))


def _batches(seed: int = 3) -> list[list[InteractionEvent]]:
    rng = random.Random(seed)
    clock = 1_600_000_000_000
    batches = []
    for b in range(12):
        batch = []
        for n in range(60):
            clock += rng.choice([1_000, HOUR, 20 * HOUR])  # crosses several popularity half-lives
            user = f"user{rng.randrange(5)}"
            item = rng.choice(ITEMS)
            batch.append(InteractionEvent(f"e{b}-{n}", user, item, rng.choice(TYPES), clock))
        batches.append(batch)
    return batches


def _replay(store: SessionStore, vectors: dict[str, np.ndarray], config: SessionConfig) -> None:
    categories = {item: f"cat{n % 3}" for n, item in enumerate(ITEMS)}
    for batch in _batches():
        users = {e.user_id for e in batch}
        previous = store.popularity_landmark()
        # The landmark moves after 64 popularity half-lives (2 h here): several rebases.
        newest = max(e.event_time for e in batch)
        landmark = previous if previous and newest - previous < 64 * 2 * HOUR else newest
        effects = apply_batch(
            batch, store.load_states(users), vectors, categories, config, "m", 8, landmark
        )
        store.write_batch(effects, previous)


@pytest.fixture(params=["native", "script"])
def write_path(request: pytest.FixtureRequest) -> str:
    """Each Redis store test runs against both ways of writing a batch: the native command of
    recstream's module (infra/redis_module) and the Lua script a Redis without it gets."""
    return str(request.param)


def _redis_store(settings: Settings, write_path: str) -> RedisSessionStore:
    native = write_path == "native"
    store = redis_session_store(settings.model_copy(update={"redis_write_module": native}))
    if native:  # the module is loaded in the Redis recstream starts: never test the fallback
        assert store.has_native_write()
        store.native_write = True
    return store


def _wrote_by(store: RedisSessionStore, write_path: str) -> None:
    """The store never fell back from the path under test."""
    assert store.native_write == (write_path == "native")


def test_memory_store_reads_like_redis_after_the_same_batches(
    infra: Settings, unique: str, tmp_path: Path, write_path: str
) -> None:
    settings = isolated_settings(
        infra,
        unique,
        tmp_path,
        history_cap=6,
        covis_max_neighbours=4,
        popularity_half_life_ms=2 * HOUR,
    )
    rng = np.random.default_rng(1)
    vectors = {i: _unit(rng) for i in ITEMS}
    config = session_config(load_settings({}, covis_window=4, popularity_half_life_ms=2 * HOUR))
    redis_store = _redis_store(settings, write_path)
    memory = InMemorySessionStore.from_settings(settings)
    try:
        _replay(redis_store, vectors, config)
        _replay(memory, vectors, config)
        users = [f"user{u}" for u in range(5)]
        assert redis_store.popularity_landmark() == memory.popularity_landmark()
        for user in users:
            assert redis_store.seen(user) == memory.seen(user)
            assert len(memory.seen(user)) == 6
            a, b = redis_store.load_states([user])[user], memory.load_states([user])[user]
            assert (a.count, a.last_time, a.floor, a.guard_ids, a.recent_items) == (
                b.count,
                b.last_time,
                b.floor,
                b.guard_ids,
                b.recent_items,
            )
            np.testing.assert_array_equal(a.vector, b.vector)
            assert a.collab_items == b.collab_items and a.collab_items
            _assert_same_view(redis_store.user_view(user), memory.user_view(user), a)
        assert redis_store.covisitation_many(ITEMS, 3) == memory.covisitation_many(ITEMS, 3)
        assert redis_store.covisitation_many(ITEMS, 3)["item1"] == redis_store.covisitation(
            "item1", 3
        )
        for store in (redis_store, memory):
            store.remember_response("user1", b"answer", 60)
            assert store.user_view("user1").last_response == b"answer"
        assert redis_store.user_view("nobody") == memory.user_view("nobody") == UserView(None)
        for item in ITEMS:
            assert redis_store.covisitation(item, 100) == memory.covisitation(item, 100)
        assert any(len(memory.covisitation(i, 100)) > 4 for i in ITEMS)  # some left to trim
        assert all(len(memory.covisitation(i, 100)) <= 5 for i in ITEMS)  # 4 + 4 // 4
        _assert_close(redis_store.popularity(100), memory.popularity(100))
        _assert_close(redis_store.popularity(100, "cat1"), memory.popularity(100, "cat1"))
        _assert_close(redis_store.popularity_of(ITEMS), memory.popularity_of(ITEMS))
        _wrote_by(redis_store, write_path)
    finally:
        delete_namespace(settings)
        redis_store.close()


def _assert_same_view(a: UserView, b: UserView, full: UserState) -> None:
    """The query's one-round-trip view: the state without guards, the seen history."""
    assert a.seen == b.seen and len(a.seen) == 6
    assert a.state is not None and b.state is not None
    assert a.state.guard_ids == b.state.guard_ids == {}
    assert a.state.recent_items == b.state.recent_items == full.recent_items
    assert (a.state.count, a.state.last_time) == (full.count, full.last_time)
    np.testing.assert_array_equal(a.state.vector, full.vector)
    np.testing.assert_array_equal(b.state.vector, full.vector)


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=8)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _one_item(seed: int) -> dict[str, np.ndarray]:
    """The vector of the single item ("item1") that tests of one user's bookkeeping need."""
    return {"item1": _unit(np.random.default_rng(seed))}


def _assert_close(a: dict[str, float], b: dict[str, float]) -> None:
    assert list(a) == list(b)  # same order, ties included
    np.testing.assert_allclose(list(a.values()), list(b.values()), rtol=1e-12)


def test_a_failed_write_stores_nothing_and_its_retry_registers_the_category(
    infra: Settings, unique: str, tmp_path: Path
) -> None:
    """Categories are registered (for popularity rebases) only by a write that was stored."""
    settings = isolated_settings(infra, unique, tmp_path)
    store = redis_session_store(settings)
    event = InteractionEvent("e1", "user1", "item1", "click", T0)
    vectors = _one_item(seed=2)
    effects = apply_batch([event], {}, vectors, {"item1": "cat9"}, DEFAULT_CONFIG, "m", 8, T0)
    stored_write = store.write_encoded

    def refused(_: bytes) -> None:
        raise redis.ConnectionError("injected: Redis went away")

    try:
        store.write_encoded = refused  # type: ignore[method-assign]
        with pytest.raises(redis.ConnectionError):
            store.write_batch(effects, None)
        assert store.load_states(["user1"]) == {}
        store.write_encoded = stored_write  # type: ignore[method-assign]
        store.write_batch(effects, None)
        assert store._redis.smembers(store.keys.categories()) == {b"cat9"}
        assert list(store.popularity(10, "cat9")) == ["item1"]
    finally:
        delete_namespace(settings)
        store.close()


@pytest.fixture
def both_stores(
    infra: Settings, unique: str, tmp_path: Path, write_path: str
) -> Iterator[tuple[RedisSessionStore, InMemorySessionStore]]:
    """A Redis store in this test's own namespace (removed after), and an in-memory one."""
    settings = isolated_settings(infra, unique, tmp_path)
    store = _redis_store(settings, write_path)
    try:
        yield store, InMemorySessionStore.from_settings(settings)
        _wrote_by(store, write_path)
    finally:
        delete_namespace(settings)
        store.close()


def test_event_id_guards_are_stored_incrementally_capped_and_read_back(
    both_stores: tuple[RedisSessionStore, InMemorySessionStore],
) -> None:
    store, memory = both_stores
    vectors = _one_item(seed=3)
    events = [InteractionEvent(f"e{n}", "heavy", "item1", "view", T0 + n) for n in range(1100)]
    for target in (store, memory):
        for start in range(0, 1100, 400):  # three batches, all inside the lateness window
            users = target.load_states(["heavy"])
            effects = apply_batch(
                events[start : start + 400], users, vectors, {}, DEFAULT_CONFIG, "m", 8, T0
            )
            target.write_batch(effects, None)
    stored = store.load_states(["heavy"])["heavy"].guard_ids
    assert stored == memory.load_states(["heavy"])["heavy"].guard_ids
    assert len(stored) == MAX_GUARD_IDS and min(stored.values()) == T0 + 1100 - MAX_GUARD_IDS
    assert store._redis.zcard(store.keys.user_guards("heavy")) == MAX_GUARD_IDS
    # A state written before the guards had their own key keeps its ids in the hash: still read.
    store._redis.hset(store.keys.user_state("heavy"), "ids", orjson.dumps({"legacy": T0 + 5000}))
    assert store.load_states(["heavy"])["heavy"].guard_ids == stored | {"legacy": T0 + 5000}


def test_loading_more_users_than_one_call_carries_reads_each_state_and_its_guards(
    both_stores: tuple[RedisSessionStore, InMemorySessionStore],
) -> None:
    store, memory = both_stores
    vectors = _one_item(seed=4)
    stored_users = 2 * _LOAD_CHUNK + 7  # three load calls, in one round trip
    events = [
        InteractionEvent(f"e{n}-{k}", f"user{n}", "item1", "view", T0 + n + k)
        for n in range(stored_users)
        for k in range(1 + n % 3)
    ]
    wanted = [f"user{n}" for n in range(stored_users + 5)]  # the last five were never stored
    for target in (store, memory):
        target.write_batch(apply_batch(events, {}, vectors, {}, DEFAULT_CONFIG, "m", 8, T0), None)
    store._redis.script_flush()  # as after a Redis restart: the load script is sent again
    loaded, expected = store.load_states(wanted), memory.load_states(wanted)
    assert loaded.keys() == expected.keys() and len(loaded) == stored_users
    for user, state in expected.items():
        assert loaded[user].guard_ids == state.guard_ids and len(state.guard_ids) >= 1
        assert loaded[user].last_time == state.last_time
        np.testing.assert_allclose(loaded[user].vector, state.vector, atol=1e-6)


def test_sets_larger_than_one_script_command_are_written_whole(
    both_stores: tuple[RedisSessionStore, InMemorySessionStore],
) -> None:
    """The write script splits each command's members in chunks of 2000 (Lua's stack): one
    user's seen history, guards and the popularity set span three chunks here, twice."""
    store, memory = both_stores
    items = [f"item{n}" for n in range(4500)]
    rng = np.random.default_rng(6)
    vectors = {item: _unit(rng) for item in items}
    categories = {item: f"cat{n}" for n, item in enumerate(items)}  # 4500 new categories
    for target in (store, memory):
        for round_ in range(2):  # the second round adds to members already stored
            events = [
                InteractionEvent(f"e{round_}-{n}", "heavy", item, "click", T0 + round_ * HOUR + n)
                for n, item in enumerate(items)
            ]
            states = target.load_states(["heavy"])
            effects = apply_batch(events, states, vectors, categories, DEFAULT_CONFIG, "m", 8, T0)
            target.write_batch(effects, T0)
    assert store.seen("heavy") == memory.seen("heavy") and len(memory.seen("heavy")) == 4500
    _assert_close(store.popularity_of(items), memory.popularity_of(items))
    assert min(memory.popularity_of(items).values()) > 1.0  # both rounds counted
    stored = store.load_states(["heavy"])["heavy"]
    assert stored.guard_ids == memory.load_states(["heavy"])["heavy"].guard_ids
    assert store._redis.scard(store.keys.categories()) == 4500
    assert store.popularity(5, "cat4499") == memory.popularity(5, "cat4499")
    assert store.covisitation("item4000", 100) == memory.covisitation("item4000", 100)
