"""Backends chosen by URL scheme (gorse's Register/Open): each backend module registers the
schemes it serves; a URL picks one. A new backend (Redis Cluster, another index) is one more
registration, not another branch in every role.

    vector index   http://, https://   a Qdrant server          (RECSTREAM_QDRANT_URL)
                   file://             embedded Qdrant shards    (default: RECSTREAM_QDRANT_PATH)
    session store  redis://, rediss:// Redis                     (RECSTREAM_REDIS_URL)
                   redis+cluster://, rediss+cluster://  Redis Cluster (any node's address)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, cast
from urllib.parse import urlsplit
from urllib.request import url2pathname

from recstream.core.attributes import AttributeType
from recstream.core.errors import SettingsError
from recstream.core.index import Distance, VectorIndex, collection_name
from recstream.core.ports import SessionStore
from recstream.core.settings import Settings
from recstream.infra.clients import redis_client
from recstream.infra.stores.keys import KeySpace
from recstream.infra.stores.session_store import RedisSessionStore


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """One collection to open, whatever the backend."""

    url: str
    collection: str
    dimension: int
    distance: Distance = "cosine"
    cache_vectors: int = 0  # decoded vectors remembered (recstream.infra.stores.vector_cache)
    collab_dimension: int = 0  # collaborative slots of a collection created now (0: none)
    api_key: str | None = None
    # Filterable attributes: each gets a payload index (created where missing).
    filter_attributes: Mapping[str, AttributeType] = field(default_factory=dict)


Opener = TypeVar("Opener", bound=Callable[..., Any])
Opens = TypeVar("Opens", bound=Callable[..., Any])


class Registry(Generic[Opener]):
    """Openers of one kind of backend by URL scheme."""

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._openers: dict[str, Opener] = {}

    def register(self, *schemes: str) -> Callable[[Opens], Opens]:
        def register(opener: Opens) -> Opens:
            for scheme in schemes:
                # An opener may take more (optional) arguments than the kind's: it keeps its
                # own signature for direct callers, which a TypeVar bound cannot say.
                self._openers[scheme] = cast(Opener, opener)
            return opener

        return register

    def opener(self, url: str) -> Opener:
        scheme = urlsplit(url).scheme
        opener = self._openers.get(scheme)
        if opener is None:
            known = ", ".join(f"{s}://" for s in sorted(self._openers))
            raise SettingsError([f"no {self._kind} backend serves {scheme}:// (known: {known})"])
        return opener


INDEX_BACKENDS: Registry[Callable[[IndexSpec], VectorIndex]] = Registry("vector-index")
SESSION_BACKENDS: Registry[Callable[[Settings], SessionStore]] = Registry("session-store")
register_index = INDEX_BACKENDS.register
register_session_store = SESSION_BACKENDS.register


def open_index(spec: IndexSpec) -> VectorIndex:
    return INDEX_BACKENDS.opener(spec.url)(spec)


@register_index("http", "https")
def _qdrant_server(spec: IndexSpec) -> VectorIndex:
    from recstream.infra.stores.qdrant_client_index import QdrantClientIndex

    return QdrantClientIndex.connect(
        spec.url,
        spec.collection,
        spec.dimension,
        spec.api_key,
        spec.distance,
        spec.cache_vectors,
        spec.collab_dimension,
        spec.filter_attributes,
    )


@register_index("file")
def _qdrant_embedded(spec: IndexSpec) -> VectorIndex:
    from recstream.infra.stores.qdrant_edge_index import QdrantEdgeIndex

    path = Path(url2pathname(urlsplit(spec.url).path)) / spec.collection
    return QdrantEdgeIndex.open(
        path,
        spec.collection,
        spec.dimension,
        spec.distance,
        spec.cache_vectors,
        spec.collab_dimension,
        spec.filter_attributes,
    )


def open_session_store(settings: Settings) -> SessionStore:
    """The session store at the settings' Redis URL, by its scheme."""
    return SESSION_BACKENDS.opener(settings.redis_address)(settings)


@register_session_store("redis", "rediss", "redis+cluster", "rediss+cluster")
def redis_session_store(
    settings: Settings, store_class: type[RedisSessionStore] = RedisSessionStore
) -> RedisSessionStore:
    """The Redis backend itself (tools that also need its own operations: namespaces, the
    encoded write); store_class lets a benchmark substitute a subclass."""
    return store_class(
        redis_client(settings),
        KeySpace(settings.state_namespace),
        history_cap=settings.history_cap,
        covis_max_neighbours=settings.covis_max_neighbours,
        popularity_half_life_ms=settings.popularity_half_life_ms,
        trending=(settings.trending_half_life_ms, settings.trending_min_recent),
        native_write=None if settings.redis_write_module else False,
        user_ttl_s=settings.user_state_ttl_s,
    )


def index_url(settings: Settings) -> str:
    """The Qdrant server's URL when one is set, else the embedded shards' folder as a URL."""
    return settings.qdrant_url or settings.qdrant_embedded_path.resolve().as_uri()


def open_vector_index(
    settings: Settings,
    model_id: str,
    dimension: int,
    collection: str | None = None,
    distance: Distance = "cosine",
    cache_vectors: int = 0,
    collab_dimension: int = 0,
) -> VectorIndex:
    """The backend the settings choose. The collection is named after model and dimension
    unless given; a collection created here gets collaborative slots of collab_dimension (0:
    none); an existing one keeps what it has."""
    api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
    return open_index(
        IndexSpec(
            index_url(settings),
            collection or collection_name(model_id, dimension),
            dimension,
            distance,
            cache_vectors,
            collab_dimension,
            api_key,
            settings.filter_attributes,
        )
    )
