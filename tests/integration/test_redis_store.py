"""The real Redis server started by recstream: round trip, AOF persistence, and the rename of
keys written under an older layout."""

from __future__ import annotations

import time

import redis

from recstream.compose import migrate_state
from recstream.core.settings import Settings
from recstream.infra.redis_server import redis_dir
from recstream.infra.stores.registry import redis_session_store


def test_round_trip_of_strings_hashes_and_sorted_sets(
    redis_client: redis.Redis, unique: str
) -> None:
    redis_client.set(f"{unique}:s", b"\x00\x01binary")
    redis_client.hset(f"{unique}:h", mapping={"a": "1", "b": "2"})
    redis_client.zadd(f"{unique}:z", {"x": 2.0, "y": 1.0})
    assert redis_client.get(f"{unique}:s") == b"\x00\x01binary"
    assert redis_client.hgetall(f"{unique}:h") == {b"a": b"1", b"b": b"2"}
    assert redis_client.zrange(f"{unique}:z", 0, -1) == [b"y", b"x"]


def test_writes_reach_the_append_only_file(
    infra: Settings, redis_client: redis.Redis, unique: str
) -> None:
    assert redis_client.config_get("appendonly")["appendonly"] == "yes"
    redis_client.set(f"{unique}:aof", "persisted")
    aof_dir = redis_dir(infra) / redis_client.config_get("appenddirname")["appenddirname"]
    deadline = time.monotonic() + 5.0  # appendfsync everysec: on disk within about a second
    found = False
    while not found and time.monotonic() < deadline:
        found = any(f"{unique}:aof".encode() in path.read_bytes() for path in aof_dir.glob("*.aof"))
        time.sleep(0.1)
    assert found, f"key not in any AOF file under {aof_dir}"


def test_rewrites_store_values_uncompressed(
    infra: Settings, redis_client: redis.Redis, unique: str
) -> None:
    """rdbcompression is off (infra/redis_server.py): a value LZF would shrink to a few bytes
    lies in the rewritten base file as it is."""
    value = unique.encode() * (20_000 // len(unique))
    redis_client.set(f"{unique}:plain", value)
    _rewrite_aof(redis_client)
    aof_dir = redis_dir(infra) / redis_client.config_get("appenddirname")["appenddirname"]
    bases = list(aof_dir.glob("*.base.*"))
    assert bases, f"no base file under {aof_dir}"
    assert any(value in path.read_bytes() for path in bases)


def _rewrite_aof(client: redis.Redis, timeout_s: float = 30.0) -> None:
    """BGREWRITEAOF, waiting for one running first, then for ours to finish."""
    deadline = time.monotonic() + timeout_s
    while _rewriting(client) and time.monotonic() < deadline:
        time.sleep(0.1)
    rewrites = client.info("persistence")["aof_rewrites"]
    client.bgrewriteaof()
    while client.info("persistence")["aof_rewrites"] == rewrites or _rewriting(client):
        assert time.monotonic() < deadline, "AOF rewrite did not finish"
        time.sleep(0.1)


def _rewriting(client: redis.Redis) -> bool:
    persistence = client.info("persistence")
    return bool(persistence["aof_rewrite_in_progress"] or persistence["aof_rewrite_scheduled"])


def test_global_keys_written_before_their_cluster_tags_are_renamed_once(
    infra: Settings, redis_client: redis.Redis, unique: str
) -> None:
    old = f"{unique}:v1"
    redis_client.zadd(f"{old}:pop", {"a": 2.0})
    redis_client.set(f"{old}:pop:landmark", "123")
    redis_client.sadd(f"{old}:pop:cats", "films")
    redis_client.zadd(f"{old}:pop:cat:films", {"a": 1.0})
    redis_client.set(f"{old}:collab:counter", "2")
    redis_client.set(f"{old}:collab:active", b'{"version": 2}')
    redis_client.set(f"{old}:collab:v2:items", b'["a"]')
    redis_client.set(f"{old}:collab:v2:factors", b"\x00\x00\x80?")
    settings = infra.isolated(unique)
    assert migrate_state(settings) == 8
    store = redis_session_store(settings)
    assert store.popularity() == {"a": 2.0}
    assert store.popularity_landmark() == 123
    assert store.popularity(category="films") == {"a": 1.0}
    keys = store.keys
    assert redis_client.get(keys.collab_active()) == b'{"version": 2}'
    assert redis_client.get(keys.collab_counter()) == b"2"
    assert redis_client.get(keys.collab_items(2)) == b'["a"]'
    assert redis_client.get(keys.collab_factors(2)) == b"\x00\x00\x80?"
    assert not redis_client.exists(f"{old}:pop", f"{old}:collab:v2:items")
    assert migrate_state(settings) == 0  # nothing left to rename
    store.close()
