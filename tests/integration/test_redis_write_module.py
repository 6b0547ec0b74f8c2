"""recstream's Redis module (infra/redis_module): what it refuses, and its writes surviving a
restart through the AOF. That its effects equal the Lua script's is checked by every test of
tests/integration/test_memory_store.py, which runs with both."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import redis

from recstream.compose import session_config
from recstream.core.settings import Settings, load_settings
from recstream.core.state import BatchEffects, UserState
from recstream.infra import redis_server
from recstream.infra.stores.registry import redis_session_store
from recstream.infra.stores.session_store import RedisSessionStore
from recstream.schemas.events import InteractionEvent
from recstream.streams.session import apply_batch
from tests.integration.ingest_helpers import delete_namespace, isolated_settings
from tests.integration.worker_process import free_port

T0 = 1_600_000_000_000
WRITE = "RECSTREAM.WRITE2"


def _effects(states: Mapping[str, UserState] | None = None) -> BatchEffects:
    """Two users, two items of a category: every section of a payload but the rebase."""
    vectors = {f"item{n}": np.eye(8, dtype=np.float32)[n] for n in range(2)}
    events = [
        InteractionEvent(f"e{n}", f"user{n % 2}", f"item{n % 2}", "click", T0 + n) for n in range(4)
    ]
    categories = dict.fromkeys(vectors, "cat1")
    config = session_config(load_settings({}))
    return apply_batch(events, states or {}, vectors, categories, config, "m", 8, T0)


def _packed(sections: list[Any]) -> bytes:
    return bytes(msgpack.packb(sections, use_bin_type=False))


def _with_section(payload: bytes, index: int, change: Callable[[Any], Any]) -> bytes:
    sections = msgpack.unpackb(payload, raw=True)
    sections[index] = change(sections[index])
    return _packed(sections)


def _drop_a_score(seen: list[list[Any]]) -> list[list[Any]]:
    return [[*record[:4], record[4][:-1]] for record in seen]


def _a_nan_score(seen: list[list[Any]]) -> list[list[Any]]:
    return [[*record[:4], [*record[4][:-1], float("nan")]] for record in seen]


MALFORMED: dict[str, Callable[[bytes], bytes]] = {
    "not msgpack": lambda _: b"hello",
    "truncated": lambda payload: payload[:-1],
    "bytes after it": lambda payload: payload + b"\x00",
    "six sections": lambda payload: _packed(msgpack.unpackb(payload, raw=True)[:6]),
    "a score missing": lambda payload: _with_section(payload, 2, _drop_a_score),
    "a score not a number": lambda payload: _with_section(payload, 2, _a_nan_score),
    "a state without values": lambda payload: _with_section(payload, 1, lambda s: [[s[0][0]]]),
}


@pytest.fixture
def store(infra: Settings, unique: str, tmp_path: Path) -> Iterator[RedisSessionStore]:
    settings = isolated_settings(infra, unique, tmp_path)
    store = redis_session_store(settings)
    assert store.has_native_write(), "recstream's Redis runs without its write module"
    try:
        yield store
    finally:
        delete_namespace(settings)
        store.close()


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_payload_is_refused_before_anything_is_written(
    store: RedisSessionStore, name: str
) -> None:
    payload = MALFORMED[name](store.encode_batch(_effects(), None, {"cat1"}))
    with pytest.raises(redis.ResponseError, match=r"recstream\.write"):
        store._redis.execute_command(WRITE, payload)
    # The states come first in a payload: the whole of it was checked before any write.
    assert store.load_states(["user0", "user1"]) == {}
    assert store.popularity(10) == {}


@pytest.mark.parametrize("native", [True, False], ids=["module", "script"])
def test_a_key_holding_another_type_fails_the_whole_write(
    store: RedisSessionStore, native: bool
) -> None:
    """user1's seen key holds a string: user0's state (written before it) must not be written
    either, or a retry would apply user0's events twice (their guards come last)."""
    store.native_write = native
    store._redis.set(store.keys.user_seen("user1"), "not a sorted set")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        store.write_batch(_effects(), None)
    assert store.native_write is native
    assert store.load_states(["user0", "user1"]) == {}
    assert store.popularity(10) == {}


@pytest.mark.parametrize("native", [True, False], ids=["module", "script"])
def test_every_per_user_key_expires_a_ttl_after_its_last_write(
    infra: Settings, unique: str, tmp_path: Path, native: bool
) -> None:
    settings = isolated_settings(infra, unique, tmp_path, user_state_ttl_s=600)
    store = redis_session_store(settings)
    store.native_write = native
    try:
        store.write_batch(_effects(), None)
        client, keys = store._redis, store.keys
        per_user = [
            key(user)
            for user in ("user0", "user1")
            for key in (keys.user_state, keys.user_guards, keys.user_seen)
        ]
        ttls = [client.pttl(key) for key in per_user]
        assert all(0 < ttl <= 600_000 for ttl in ttls), dict(zip(per_user, ttls, strict=True))
        shared = [keys.popularity(), keys.category_popularity("cat1"), keys.popularity_landmark()]
        assert [client.pttl(key) for key in shared] == [-1, -1, -1]  # not per user: kept
    finally:
        delete_namespace(settings)
        store.close()


def test_the_first_payload_version_is_still_written_for_an_older_aof(
    store: RedisSessionStore,
) -> None:
    """RECSTREAM.WRITE (seven sections, no expiry) stays: an AOF written before version 2 must
    load with the new build of the module."""
    payload = _packed(msgpack.unpackb(store.encode_batch(_effects(), None, {"cat1"}), raw=True)[:7])
    assert store._redis.execute_command("RECSTREAM.WRITE", payload) == 2
    assert set(store.load_states(["user0", "user1"])) == {"user0", "user1"}


def test_the_reply_counts_the_states_written(store: RedisSessionStore) -> None:
    payload = store.encode_batch(_effects(), None, {"cat1"})
    assert store._redis.execute_command(WRITE, payload) == 2


def _own_redis(tmp_path: Path, **env: str) -> Settings:
    """A second Redis, in its own state directory, started by recstream's own launcher."""
    settings = load_settings(
        {"RECSTREAM_STATE_DIR": str(tmp_path), "RECSTREAM_REDIS_PORT": str(free_port())} | env
    )
    redis_server.start_redis(settings)
    return settings


def _everything(client: redis.Redis) -> dict[bytes, Any]:
    dumped: dict[bytes, Any] = {}
    for key in client.scan_iter():
        kind = client.type(key)
        if kind == b"hash":
            dumped[key] = client.hgetall(key)
        elif kind == b"zset":
            dumped[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            dumped[key] = client.smembers(key)
        else:
            dumped[key] = client.get(key)
    return dumped


def test_native_writes_replay_from_the_aof_after_a_restart(tmp_path: Path) -> None:
    settings = _own_redis(tmp_path)
    try:
        store = redis_session_store(settings)
        store.write_batch(_effects(), None)
        assert store.native_write
        written = _everything(store._redis)
        store.close()
        aof = redis_server.redis_dir(settings) / "appendonlydir"
        assert any(WRITE.encode() in path.read_bytes().upper() for path in aof.glob("*.incr.aof"))
        redis_server.stop_redis(settings)
        redis_server.start_redis(settings)
        store = redis_session_store(settings)
        assert written and _everything(store._redis) == written
        store.close()
    finally:
        redis_server.stop_redis(settings)


def test_a_redis_without_the_module_is_written_by_the_script(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _own_redis(tmp_path, RECSTREAM_REDIS_WRITE_MODULE="false")
    try:
        found = redis_session_store(settings.model_copy(update={"redis_write_module": True}))
        with caplog.at_level(logging.INFO, "recstream.infra.stores.session_store"):
            found.write_batch(_effects(), None)
        assert found.native_write is False
        assert "Redis batch writes: the Lua script" in caplog.text
        written = _everything(found._redis)
        found._redis.flushall()
        # A store that was told the module is there (a Redis restarted without it) finds out.
        told = redis_session_store(settings.model_copy(update={"redis_write_module": True}))
        told.native_write = True
        told.write_batch(_effects(), None)
        assert told.native_write is False
        assert "no longer has recstream's module" in caplog.text
        assert written and _everything(told._redis) == written
        found.close()
        told.close()
    finally:
        redis_server.stop_redis(settings)


def test_switched_off_a_module_built_before_is_still_loaded(tmp_path: Path) -> None:
    """Data written through the module may still be in the AOF: turning the setting off must
    not leave Redis unable to load it."""
    settings = _own_redis(tmp_path)
    try:
        store = redis_session_store(settings)
        store.write_batch(_effects(), None)
        written = _everything(store._redis)
        store.close()
        redis_server.stop_redis(settings)
        switched_off = settings.model_copy(update={"redis_write_module": False})
        redis_server.start_redis(switched_off)
        store = redis_session_store(switched_off)
        assert store.native_write is False and _everything(store._redis) == written
        # By the script now; the same events again, applied on the stored states: duplicates.
        store.write_batch(_effects(store.load_states(["user0", "user1"])), T0)
        assert _everything(store._redis) == written
        store.close()
    finally:
        redis_server.stop_redis(settings)


def test_a_user_refused_the_command_by_acl_writes_with_the_script(
    infra: Settings, unique: str, tmp_path: Path, redis_client: redis.Redis
) -> None:
    redis_client.acl_setuser(
        unique,
        enabled=True,
        passwords=[f"+{unique}"],
        keys=["*"],
        commands=["+@all", "-recstream.write2"],
    )
    settings = isolated_settings(infra, unique, tmp_path)
    address = settings.redis_address.replace("redis://", f"redis://{unique}:{unique}@")
    store = redis_session_store(settings.model_copy(update={"redis_url": address}))
    try:
        assert not store.has_native_write()
        store.write_batch(_effects(), None)
        assert store.native_write is False
        assert set(store.load_states(["user0", "user1"])) == {"user0", "user1"}
    finally:
        delete_namespace(settings)
        store.close()
        redis_client.acl_deluser(unique)
