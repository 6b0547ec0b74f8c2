"""Pipeline versions (docs/architecture.md, "Versioned pipelines"): which versions exist, and one
pointer in Redis (on the base namespace) saying which version answers which request.

Every version's query workers read every request (each version in a group of its own), and each
request is answered by the version that owns it: the active one from the request offsets it
became active at, the one before it below them. A switch is two SETs: first both versions answer
everything (a request may get two answers for a moment, never none), then the incoming version
owns every request from the request topic's ends read after the first SET. A worker reads the
pointer after fetching its requests, so no request can be declined by both.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import orjson
import redis

from recstream.infra.stores.keys import KeySpace

UNVERSIONED = ""


@dataclass(frozen=True, slots=True)
class PipelineInfo:
    version: str
    model: str
    first_seen_ms: int


@dataclass(frozen=True)
class Pointer:
    active: str = UNVERSIONED
    previous: str | None = None
    # Request partition -> the first offset `active` answers (below it: `previous`).
    since: Mapping[int, int] = field(default_factory=dict)
    incoming: str | None = None  # during a switch: both answer every request

    def owns(self, version: str, partition: int, offset: int) -> bool:
        if self.incoming is not None:
            return version in (self.active, self.incoming)
        first = self.since.get(partition, 0)
        if version == self.active:
            return offset >= first
        return version == self.previous and offset < first

    def to_json(self) -> bytes:
        since = {str(p): o for p, o in self.since.items()}
        return orjson.dumps(
            {"active": self.active, "previous": self.previous, "since": since}
            | {"incoming": self.incoming}
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Pointer:
        value = orjson.loads(raw)
        since = {int(p): int(o) for p, o in (value.get("since") or {}).items()}
        return cls(value["active"], value.get("previous"), since, value.get("incoming"))


class PipelineVersions:
    def __init__(self, client: redis.Redis[bytes], keys: KeySpace) -> None:
        self._redis = client
        self._keys = keys

    def register(self, version: str, model: str) -> None:
        """Record a version when one of its processes starts (the first record stays)."""
        info = {"model": model, "first_seen_ms": int(time.time() * 1000)}
        self._redis.hsetnx(self._keys.pipeline_versions(), version, orjson.dumps(info))

    def known(self) -> list[PipelineInfo]:
        raw = self._redis.hgetall(self._keys.pipeline_versions())
        versions = [
            PipelineInfo(name.decode(), info["model"], int(info["first_seen_ms"]))
            for name, value in raw.items()
            for info in (orjson.loads(value),)
        ]
        return sorted(versions, key=lambda v: (v.first_seen_ms, v.version))

    def pointer(self) -> Pointer:
        raw = self._redis.get(self._keys.pipeline_active())
        return Pointer() if raw is None else Pointer.from_json(raw)

    def active(self) -> str:
        return self.pointer().active

    def switch(self, version: str, request_ends: Callable[[], Mapping[int, int]]) -> str:
        """Make `version` the active one (the two SETs above); the one it replaces."""
        current = self.pointer()
        key = self._keys.pipeline_active()
        both = Pointer(current.active, current.previous, current.since, incoming=version)
        self._redis.set(key, both.to_json())
        ends = request_ends()  # read after the first SET: see the module's docstring
        self._redis.set(key, Pointer(version, current.active, dict(ends)).to_json())
        return current.active

    def forget(self, version: str) -> None:
        self._redis.hdel(self._keys.pipeline_versions(), version)


class RequestOwnership:
    """For a query worker: which requests of a batch its version answers, from the pointer read
    now (an unreadable pointer: the last one read)."""

    def __init__(self, versions: PipelineVersions, version: str) -> None:
        self._versions = versions
        self._version = version
        self._pointer = Pointer()

    def read(self) -> Callable[[int, int], bool]:
        # Unreadable: the last one read (the store's outage is the answers' concern).
        with contextlib.suppress(redis.RedisError):
            self._pointer = self._versions.pointer()
        pointer, version = self._pointer, self._version
        return lambda partition, offset: pointer.owns(version, partition, offset)
