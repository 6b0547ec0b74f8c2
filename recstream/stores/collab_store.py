"""Versions of the collaborative space: item factors in their own collection of the vector index
(dot distance: factor lengths matter), one collection per version, and a pointer in Redis that
readers follow. Publishing writes the whole new version first and moves the pointer last, in one
SET: a reader sees the old version or the new one, never a mix, and a failed run leaves the
pointer where it was. The previous version's collection is dropped only after the switch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
import orjson
import redis

from recstream.errors import RecstreamError
from recstream.settings import Settings
from recstream.stores.keys import KeySpace
from recstream.stores.vector_index import ItemPayload, drop_collection, open_vector_index
from recstream.streams import metrics
from recstream.streams.collab import CollabModel, ModelView
from recstream.streams.session import UserState

log = logging.getLogger(__name__)

COLLAB_MODEL_ID = "collab-als"


@dataclass(frozen=True)
class VersionInfo:
    version: int
    collection: str
    dimension: int
    regularization: float
    alpha: float
    items: int
    trained_ms: int
    drift: float | None  # mean share of top-20 neighbours changed against the previous version


def collab_collection(version: int, dimension: int) -> str:
    return f"collab__als-v{version}__{dimension}"


class CollabVersions:
    def __init__(self, settings: Settings, client: redis.Redis[bytes], keys: KeySpace) -> None:
        self._settings = settings
        self._redis = client
        self._keys = keys

    def active(self) -> VersionInfo | None:
        raw = self._redis.get(self._keys.collab_active())
        return None if raw is None else VersionInfo(**orjson.loads(raw))

    def publish(
        self, model: CollabModel, payloads: Mapping[str, ItemPayload], drift: float | None
    ) -> VersionInfo:
        """Write `model` as a new version and switch readers to it. Items without a payload
        (not in the catalog) are left out."""
        version = int(self._redis.incr(self._keys.collab_counter()))
        kept = [i for i in model.items if i in payloads]  # model order, so rows match
        info = VersionInfo(
            version,
            collab_collection(version, model.dimension),
            model.dimension,
            model.regularization,
            model.alpha,
            len(kept),
            int(time.time() * 1000),
            drift,
        )
        try:
            self._write(info, model, payloads, kept)
        except Exception:
            drop_collection(self._settings, info.collection)
            self._redis.delete(self._keys.collab_items(version))
            raise
        previous = self.active()
        self._redis.set(self._keys.collab_active(), orjson.dumps(asdict(info)))
        if previous is not None:
            drop_collection(self._settings, previous.collection)
            self._redis.delete(self._keys.collab_items(previous.version))
        return info

    def _write(
        self,
        info: VersionInfo,
        model: CollabModel,
        payloads: Mapping[str, ItemPayload],
        kept: list[str],
    ) -> None:
        index = open_vector_index(
            self._settings, COLLAB_MODEL_ID, info.dimension, info.collection, "dot"
        )
        try:
            for start in range(0, len(kept), 1000):
                chunk = kept[start : start + 1000]
                index.upsert([(payloads[i], model.factors[model.row(i) or 0]) for i in chunk])
        finally:
            index.close()
        self._redis.set(self._keys.collab_items(info.version), orjson.dumps(kept))

    def load(self, info: VersionInfo) -> CollabModel:
        """The factors of one version, checked against what the version declares."""
        raw = self._redis.get(self._keys.collab_items(info.version))
        if raw is None:
            raise RecstreamError(f"collab version {info.version} has no item list")
        items: list[str] = orjson.loads(raw)
        index = open_vector_index(
            self._settings, COLLAB_MODEL_ID, info.dimension, info.collection, "dot"
        )
        try:
            records = index.retrieve(items, with_vectors=True)
        finally:
            index.close()
        vectors = [records[i].vector for i in items if i in records]
        if len(vectors) != len(items) or any(
            v is None or v.shape != (info.dimension,) for v in vectors
        ):
            raise RecstreamError(
                f"collab version {info.version} does not hold {len(items)} vectors of "
                f"dimension {info.dimension}: rejected"
            )
        factors = np.stack([v for v in vectors if v is not None])
        return CollabModel(info.version, items, factors, info.regularization, info.alpha)


class CollabReader:
    """The active version for one reader (the interaction processor or the query worker), loaded
    when the pointer moves; the pointer is read at most every refresh_s. A version that fails to
    load (e.g. rejected for its dimension) is logged and the current one kept."""

    def __init__(self, versions: CollabVersions, refresh_s: float = 5.0) -> None:
        self._versions = versions
        self._refresh_s = refresh_s
        self._model: CollabModel | None = None
        self._checked = -float("inf")
        self._lock = threading.Lock()

    def current(self) -> CollabModel | None:
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= self._refresh_s:
                self._checked = now
                self._refresh()
            return self._model

    def _refresh(self) -> None:
        info = self._versions.active()
        if info is None or (self._model is not None and self._model.version == info.version):
            return
        try:
            self._model = self._versions.load(info)
            metrics.COLLAB_VERSION.set(info.version)
            log.info("collaborative model version %d loaded (%d items)", info.version, info.items)
        except (RecstreamError, OSError) as error:
            log.warning("collaborative model version %d not loaded: %s", info.version, error)


class ModelSource(Protocol):
    def current(self) -> CollabModel | None: ...


class FixedModel:
    """One model that never changes (the offline evaluation's source)."""

    def __init__(self, model: CollabModel) -> None:
        self._model = model

    def current(self) -> CollabModel:
        return self._model


class StateCollab:
    """The query side's CollabSource: the factor the processor folded in, when it belongs to the
    active version, else a fold-in now from the user's stored history (same maths)."""

    def __init__(self, reader: ModelSource, min_history: int) -> None:
        self._reader = reader
        self._min_history = min_history

    def for_user(self, user_id: str, state: UserState) -> ModelView | None:
        model = self._reader.current()
        if model is None or len(state.collab_items) < max(1, self._min_history):
            return None
        factor = state.collab_vector
        if factor is None or state.collab_version != model.version:
            factor = model.fold_in(state.collab_items)
        return None if factor is None else ModelView(model, factor)
