"""The real Redis server started by recstream: round trip and AOF persistence."""

from __future__ import annotations

import time

import redis

from recstream.infra.redis_server import redis_dir
from recstream.settings import Settings


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
