"""Versions of the collaborative space.

Item factors live in the content collection of the vector index as named vectors beside
`content`, in two slots (double-buffering). `recstream train` stages a version in Redis (item
list and factors); a worker that holds the index installs it: it rewrites the slot no reader uses
and then moves the `active` pointer in one SET, so a reader sees the old version or the new one,
never a mix, and a failed install leaves the pointer where it was. The previous version stays in
its slot until the next install; a slot is rewritten only once every reader has had time to move
off it (two refresh periods after the last switch). docs/collab.md.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, fields, replace

import numpy as np
import orjson
import redis

from recstream.core.collab import CollabModel, VersionInfo
from recstream.core.errors import RecstreamError
from recstream.core.index import COLLAB_SLOTS, VectorIndex
from recstream.infra.errors import CollabRejectedError
from recstream.infra.metrics import COLLAB_INSTALLS, COLLAB_VERSION
from recstream.infra.stores.keys import KeySpace

log = logging.getLogger(__name__)

INSTALL_LOCK_S = 600  # a worker that died mid-install gives the lock up after this
# KEYS: active, staged; ARGV: the new active pointer, the installed version number.
_SWITCH_LUA = """
redis.call('SET', KEYS[1], ARGV[1])
local staged = redis.call('GET', KEYS[2])
if staged and cjson.decode(staged)['version'] == tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[2])
end
"""


def _info(raw: bytes | None) -> VersionInfo | None:
    if raw is None:
        return None
    # Fields this code does not know (an older layout's pointer names its own collection) are
    # left out: such a version has no slot and no stored factors, so readers
    # skip it and the next install replaces it.
    known = {f.name for f in fields(VersionInfo)}
    return VersionInfo(**{k: v for k, v in orjson.loads(raw).items() if k in known})


class CollabVersions:
    def __init__(self, client: redis.Redis[bytes], keys: KeySpace, refresh_s: float) -> None:
        self._redis = client
        self._keys = keys
        self._refresh_s = refresh_s
        self._switch = client.register_script(_SWITCH_LUA)

    def active(self) -> VersionInfo | None:
        return _info(self._redis.get(self._keys.collab_active()))

    def staged(self) -> VersionInfo | None:
        return _info(self._redis.get(self._keys.collab_staged()))

    def stage(self, model: CollabModel, drift: float | None) -> VersionInfo:
        """Store `model` as a new version for a worker to install; a staged version not yet
        installed is replaced (the newer training wins)."""
        version = int(self._redis.incr(self._keys.collab_counter()))
        info = VersionInfo(
            version,
            model.dimension,
            model.regularization,
            model.alpha,
            len(model.items),
            int(time.time() * 1000),
            drift,
        )
        superseded = self.staged()
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(self._keys.collab_items(version), orjson.dumps(list(model.items)))
        pipe.set(self._keys.collab_factors(version), model.factors.astype("<f4").tobytes())
        pipe.set(self._keys.collab_staged(), orjson.dumps(asdict(info)))
        pipe.execute()
        installing = self._redis.get(self._keys.collab_installing())
        if superseded is not None and installing != str(superseded.version).encode():
            self._forget(superseded.version)  # (one being installed right now keeps its data)
        return info

    def install_staged(self, index: VectorIndex | None) -> VersionInfo | None:
        """Write the staged version into the free slot of `index` and switch readers to it
        (index None: only switch; every embedded replica writes its own slot, LocalCollab).
        None when there is nothing to do yet: nothing staged, another worker installing, or
        readers may still be on the free slot's version. Raises CollabRejectedError (and drops
        the staged version) when it can never fit; any other error leaves it staged."""
        # Every worker asks every refresh period: both pointers in one read.
        raw = self._redis.mget([self._keys.collab_staged(), self._keys.collab_active()])
        staged, active = _info(raw[0]), _info(raw[1])
        if staged is None or not self._free_slot_is_idle(active):
            return None
        lock = self._keys.collab_installing()
        if not self._redis.set(lock, staged.version, nx=True, ex=INSTALL_LOCK_S):
            return None
        try:
            installed = self._install(index, staged, active)
        except CollabRejectedError:
            COLLAB_INSTALLS.labels("rejected").inc()
            raise
        except Exception:
            COLLAB_INSTALLS.labels("failed").inc()
            raise
        finally:
            self._redis.delete(lock)
        COLLAB_INSTALLS.labels("installed").inc()
        return installed

    def _free_slot_is_idle(self, active: VersionInfo | None) -> bool:
        if active is None or active.installed_ms is None:
            return True
        return time.time() * 1000 - active.installed_ms >= 2000 * self._refresh_s

    def _install(
        self, index: VectorIndex | None, staged: VersionInfo, active: VersionInfo | None
    ) -> VersionInfo:
        if index is None:
            switched = replace(staged, installed_ms=int(time.time() * 1000))
            self._switch_to(switched, active)
            return switched
        if index.collab_dimension != staged.dimension:
            self._redis.delete(self._keys.collab_staged())
            self._forget(staged.version)
            have = index.collab_dimension or "no"
            raise CollabRejectedError(
                f"collab version {staged.version} has {staged.dimension} factors but collection "
                f"{index.collection} has {have} collaborative dimensions: rejected"
                + (f"; version {active.version} stays" if active else "")
            )
        model = self.load(staged)
        slot = (
            COLLAB_SLOTS[0] if active is None or active.slot != COLLAB_SLOTS[0] else COLLAB_SLOTS[1]
        )
        written = index.write_collab(slot, dict(zip(model.items, model.factors, strict=True)))
        installed = replace(staged, slot=slot, items=written, installed_ms=int(time.time() * 1000))
        self._switch_to(installed, active)
        return installed

    def _switch_to(self, installed: VersionInfo, active: VersionInfo | None) -> None:
        """The switch, and the staged pointer cleared only if it still names this version: a
        training run may have staged a newer one meanwhile, which must stay staged."""
        self._switch(
            keys=[self._keys.collab_active(), self._keys.collab_staged()],
            args=[orjson.dumps(asdict(installed)), str(installed.version)],
        )
        if active is not None:
            self._forget(active.version)

    def _forget(self, version: int) -> None:
        self._redis.delete(self._keys.collab_items(version), self._keys.collab_factors(version))

    def load(self, info: VersionInfo) -> CollabModel:
        """The factors of one version, checked against what the version declares."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(self._keys.collab_items(info.version))
        pipe.get(self._keys.collab_factors(info.version))
        raw_items, raw_factors = pipe.execute()
        if raw_items is None or raw_factors is None:
            raise RecstreamError(f"collab version {info.version} has no stored factors")
        items: list[str] = orjson.loads(raw_items)
        factors = np.frombuffer(raw_factors, dtype="<f4")
        if factors.size != len(items) * info.dimension:
            raise RecstreamError(
                f"collab version {info.version} does not hold {len(items)} factors of "
                f"dimension {info.dimension}: rejected"
            )
        model = CollabModel(
            info.version,
            items,
            factors.reshape(len(items), info.dimension),
            info.regularization,
            info.alpha,
        )
        model.slot = info.slot
        return model


class CollabInstaller:
    """Installs staged versions from inside a worker: into a shared index (a Qdrant server's
    slots), or, where every process holds its own replica (index None), only the switch of the
    pointer, after which `local` writes this replica's slot. A look every refresh period, on
    the caller's thread."""

    def __init__(
        self, versions: CollabVersions, index: VectorIndex | None, local: LocalCollab | None = None
    ) -> None:
        self._versions = versions
        self._index = index
        self._local = local

    def run(self, stopping: threading.Event, every_s: float) -> None:
        """Look at once (a version may wait from before the worker started), then every every_s."""
        self.install_once()
        while not stopping.wait(every_s):
            self.install_once()

    def install_once(self) -> VersionInfo | None:
        installed = self._install_staged()
        if self._local is not None:
            try:
                self._local.refresh()
            except Exception:  # the index failed: the replica keeps serving the version it has
                log.exception("collaborative version not installed in this replica; retrying")
        return installed

    def _install_staged(self) -> VersionInfo | None:
        try:
            installed = self._versions.install_staged(self._index)
        except CollabRejectedError as error:
            log.error("%s", error)
            return None
        except Exception:  # the index or Redis failed: the version stays staged, retried later
            log.exception("collaborative version not installed; retrying")
            return None
        if installed is not None:
            log.info(
                "collaborative version %d active%s (%d items)",
                installed.version,
                "" if installed.slot is None else f" in slot {installed.slot}",
                installed.items,
            )
        return installed


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
            COLLAB_VERSION.set(info.version)
            log.info("collaborative model version %d loaded (%d items)", info.version, info.items)
        except (RecstreamError, OSError) as error:
            log.warning("collaborative model version %d not loaded: %s", info.version, error)


def wait_installed(versions: CollabVersions, version: int, timeout_s: float) -> VersionInfo | None:
    """The active version once a worker installed `version` (or a newer one); None when it
    was rejected or superseded meanwhile, or after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        active = versions.active()
        if active is not None and active.version >= version:
            return active
        staged = versions.staged()
        if staged is None or staged.version != version or time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


class LocalCollab:
    """The active version as served by a process whose index is its own replica: each new
    version is written into the slot of this index that no request of this process uses, and
    served only then, so a request never pairs a version's user factor with another version's
    item factors. `refresh` on one thread (the installer's); `current` from any."""

    def __init__(self, versions: CollabVersions, index: VectorIndex, refresh_s: float) -> None:
        self._reader = CollabReader(versions, refresh_s)
        self._index = index
        self._model: CollabModel | None = None
        self._rejected: int | None = None

    def current(self) -> CollabModel | None:
        return self._model

    def refresh(self) -> CollabModel | None:
        """Install the active version here if it is new; the one now served."""
        model = self._reader.current()
        if model is None or model.version in (self._rejected, self._version()):
            return self._model
        if self._index.collab_dimension != model.dimension:
            self._rejected = model.version
            log.error(
                "collab version %d has %d factors but %s has %d collaborative dimensions: "
                "not installed here",
                model.version,
                model.dimension,
                self._index.collection,
                self._index.collab_dimension,
            )
            return self._model
        used = self._model.slot if self._model else None
        slot = COLLAB_SLOTS[1] if used == COLLAB_SLOTS[0] else COLLAB_SLOTS[0]
        self._index.write_collab(slot, dict(zip(model.items, model.factors, strict=True)))
        model.slot = slot  # the reader's own copy: nobody else holds it
        self._model = model
        COLLAB_INSTALLS.labels("installed").inc()
        log.info("collaborative version %d in this replica's slot %d", model.version, slot)
        return model

    def _version(self) -> int | None:
        return None if self._model is None else self._model.version
