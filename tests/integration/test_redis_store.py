"""The real Redis server started by recstream: round trip and AOF persistence."""

from __future__ import annotations

import time

import redis

from recstream.core.settings import Settings
from recstream.infra.redis_server import redis_dir


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
