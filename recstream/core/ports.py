"""The ports: what the processors and the query side need from the state stores and the
embedder, one Protocol per user. Backends live in recstream.infra and are opened by
recstream.infra.stores.registry; the vector-index port is recstream.core.index."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from recstream.core.collab import CollabModel, VersionInfo
from recstream.core.index import Vector, VectorIndex
from recstream.core.state import BatchEffects, UserState


@dataclass(frozen=True, slots=True)
class UserView:
    """What answering one user's request needs from the store, read in one round trip. The
    state carries no event-id guards (only the processor needs them)."""

    state: UserState | None
    seen: dict[str, int] = field(default_factory=dict)
    last_response: bytes | None = None


class SessionWriter(Protocol):
    """What the interaction processor needs: load the states a batch touches, write its
    effects at once (docs/state-layout.md names the write's payload)."""

    def load_states(self, user_ids: Iterable[str]) -> dict[str, UserState]: ...

    def popularity_landmark(self) -> int | None: ...

    def write_batch(self, effects: BatchEffects, previous_landmark: int | None) -> None: ...


class SessionReader(Protocol):
    """What the query side reads: one user's view, the behaviour signals around candidates,
    and the last answer (for the degraded path)."""

    def user_view(self, user_id: str) -> UserView: ...

    def seen(self, user_id: str) -> dict[str, int]: ...

    def covisitation(self, item_id: str, limit: int = 50) -> dict[str, float]: ...

    def covisitation_many(
        self, item_ids: Sequence[str], limit: int = 50
    ) -> dict[str, dict[str, float]]: ...

    def transitions_many(
        self, item_ids: Sequence[str], limit: int = 50
    ) -> dict[str, dict[str, float]]:
        """Per item, the items most often chosen after it (the next signal), most first."""
        ...

    def popularity(self, limit: int = 100, category: str | None = None) -> dict[str, float]: ...

    def popularity_of(self, item_ids: list[str]) -> dict[str, float]: ...

    def trending(self, limit: int = 100) -> dict[str, float]:
        """Items by velocity now (recstream.core.trending), best first."""
        ...

    def remember_response(self, user_id: str, response: bytes, ttl_s: int) -> None: ...

    def last_response(self, user_id: str) -> bytes | None: ...


class SessionStore(SessionWriter, SessionReader, Protocol):
    """Both sides, as one backend provides them (Redis for the services, in memory for the
    offline evaluation); tests/contract/test_session_store.py holds both to one behaviour."""

    def ping(self) -> bool:
        """Whether the backend answers (readiness)."""

    def close(self) -> None: ...


class CollabVersionStore(Protocol):
    """Versions of the collaborative model: the trainer stages one, a worker holding the index
    installs it into a free slot and moves the active pointer, readers load the active one."""

    def active(self) -> VersionInfo | None: ...

    def staged(self) -> VersionInfo | None: ...

    def stage(self, model: CollabModel, drift: float | None) -> VersionInfo: ...

    def install_staged(self, index: VectorIndex) -> VersionInfo | None: ...

    def load(self, info: VersionInfo) -> CollabModel: ...


class Embedder(Protocol):
    @property
    def model_id(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Vector:
        """Unit vectors, one row per text (float32, shape (len(texts), dimension))."""
