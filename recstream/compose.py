"""The composition root: every component built from the settings, in one place. Roles
(recstream.worker), the trainer (recstream.train), the evaluation and the benchmarks build what
they run from here, so each setting reaches every component that uses it the same way."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from recstream.consumers.decide import QueryConfig
from recstream.consumers.query_worker import QueryWorker
from recstream.consumers.ranking import RankingWeights
from recstream.consumers.recommender import Recommender
from recstream.core.collab import StateCollab
from recstream.core.index import ItemStore, VectorIndex
from recstream.core.ports import SessionStore, SessionWriter
from recstream.core.pressure import QueryPressure
from recstream.core.progress import RoleProgress
from recstream.core.settings import Settings
from recstream.infra.clients import (
    KafkaProbe,
    consumer_config,
    is_cluster,
    is_outage,
    kafka_config,
    lag_statistics,
    redis_client,
)
from recstream.infra.dlq import DeadLetterWriter
from recstream.infra.embedder import SentenceTransformerEmbedder, model_id_for
from recstream.infra.messages import RawMessage
from recstream.infra.metrics import BATCH_RETRIES, RECORDS_ISOLATED
from recstream.infra.stores.collab_store import (
    CollabInstaller,
    CollabReader,
    CollabVersions,
    LocalCollab,
)
from recstream.infra.stores.item_vectors import ItemVectorCopy
from recstream.infra.stores.keys import KeySpace
from recstream.infra.stores.pipelines import PipelineVersions, RequestOwnership
from recstream.infra.stores.registry import (
    open_session_store,
    open_vector_index,
    redis_session_store,
)
from recstream.infra.topics import vector_topic
from recstream.infra.vector_log import VectorLogWriter
from recstream.schemas.events import EventDecoder, TimeBounds
from recstream.streams import kernels
from recstream.streams.catalog import CatalogProcessor
from recstream.streams.collab import AlsParams
from recstream.streams.interactions import (
    InteractionConsumer,
    InteractionProcessor,
    processing_failed,
)
from recstream.streams.isolation import PoisonIsolation, RetryPolicy
from recstream.streams.replica import Checkpoint, IndexReplica
from recstream.streams.session import SessionConfig
from recstream.streams.waiting import WaitingRoom

ROLES = ("catalog", "interactions", "query", "train")
EMBEDDING_ROLES = frozenset({"catalog", "query"})


def pipeline_versions(settings: Settings) -> PipelineVersions:
    """The versions and the active pointer (on the base namespace: one for every version)."""
    return PipelineVersions(redis_client(settings), KeySpace(settings.redis_namespace))


def session_config(settings: Settings) -> SessionConfig:
    return SessionConfig(
        weights=settings.event_weights,
        rating_center=settings.rating_center,
        rating_weight_per_point=settings.rating_weight_per_point,
        half_life_ms=settings.session_half_life_ms,
        allowed_lateness_ms=settings.allowed_lateness_ms,
        covis_window=settings.covis_window,
        next_window=settings.next_window,
        popularity_half_life_ms=settings.popularity_half_life_ms,
        seen_hide_ms=settings.seen_hide_ms,
        trending_half_life_ms=settings.trending_half_life_ms,
    )


def als_params(settings: Settings) -> AlsParams:
    """The collaborative model's training parameters (the `train` job's, and the shipped
    configuration's in the evaluation)."""
    return AlsParams(
        settings.collab_factors,
        settings.collab_regularization,
        settings.collab_alpha,
        settings.collab_iterations,
    )


def retry_policy(settings: Settings) -> RetryPolicy:
    """How a failing batch is retried before its failing records are isolated (both roles)."""
    return RetryPolicy(max_attempts=settings.batch_max_attempts)


def event_decoder(settings: Settings) -> EventDecoder:
    return EventDecoder(TimeBounds(settings.min_event_time_ms, settings.max_clock_skew_ms))


def collab_versions(settings: Settings) -> CollabVersions:
    client = redis_client(settings)
    return CollabVersions(client, KeySpace(settings.state_namespace), settings.collab_refresh_s)


def session_store(settings: Settings) -> SessionStore:
    """The session store the settings' Redis URL names (recstream.infra.stores.registry)."""
    return open_session_store(settings)


def migrate_state(settings: Settings) -> int:
    """Bring a single Redis's state written under an older key layout to this one's (the global
    keys' cluster tags); the number of keys renamed. A cluster was never written untagged."""
    if is_cluster(settings):
        return 0
    store = redis_session_store(settings)
    try:
        return store.migrate_untagged_keys()
    finally:
        store.close()


def load_embedder(settings: Settings) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(
        settings.resolved_model_path,
        model_id_for(settings.model_path),
        threads=settings.embed_threads,
        batch_size=settings.embed_batch_size,
    )


@dataclass
class Runtime:
    """The adapters one worker process shares between its roles.

    Item vectors come from the vector topic (docs/architecture.md, "Topology"): a process that
    searches them (catalog, query) keeps its own embedded shard equal to the topic, an
    interactions-only process a float16 copy in memory; with a Qdrant server, catalog and
    query use the server's collection and only the interaction processor keeps a copy."""

    settings: Settings
    index: VectorIndex | None  # searched (catalog, query, collab slots); None: no role needs it
    items: ItemStore  # the interaction processor's item vectors
    embedder: SentenceTransformerEmbedder | None  # loaded only for the roles that embed
    store: SessionStore
    dead_letters: DeadLetterWriter
    replica: IndexReplica | None = None  # keeps this process's own copy equal to the topic
    collab: LocalCollab | None = None  # collaborative versions as this replica serves them
    # Requests in hand in this process: the interaction loop steps back for them.
    pressure: QueryPressure = field(default_factory=QueryPressure)
    roles: dict[str, RoleProgress] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)
    closers: list[Callable[[], None]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, roles: Sequence[str] = ROLES) -> Runtime:
        """The adapters for these roles. The model (seconds to load, most of a worker's start)
        is loaded only where text is embedded (catalog, query)."""
        model_id = model_id_for(settings.model_path)
        embedder = load_embedder(settings) if EMBEDDING_ROLES & set(roles) else None
        index = None
        if embedder is not None:
            index = open_vector_index(
                settings,
                model_id,
                embedder.dimension,
                cache_vectors=settings.vector_cache_items,
                collab_dimension=settings.collab_factors,
            )
        items: ItemStore = (
            ItemVectorCopy(model_id) if index is None or settings.qdrant_url else index
        )
        runtime = cls(
            settings,
            index,
            items,
            embedder,
            session_store(settings),
            DeadLetterWriter(kafka_config(settings)),
        )
        if "interactions" in roles or (index is not None and not settings.qdrant_url):
            runtime.replica = index_replica(settings, items)
        if index is not None and not settings.qdrant_url:
            runtime.collab = LocalCollab(
                collab_versions(settings), index, settings.collab_refresh_s
            )
        return runtime

    @property
    def shared_index(self) -> VectorIndex | None:
        """The index every query worker reads (a Qdrant server's), which collaborative versions
        are installed into; None with embedded replicas, which each install them themselves."""
        return self.index if self.settings.qdrant_url else None

    def collab_reader(self) -> CollabReader:
        """A reader of the active collaborative version (one per role: each loads its own)."""
        return CollabReader(collab_versions(self.settings), self.settings.collab_refresh_s)

    def health_checks(self) -> dict[str, Callable[[], bool]]:
        checks: dict[str, Callable[[], bool]] = {
            "kafka": KafkaProbe(self.settings),
            "redis": self.store.ping,
        }
        if self.index is not None:
            checks["index"] = lambda: self.index is not None and self.index.count() >= 0
        if self.replica is not None:
            checks["replica caught up"] = lambda: self.replica is not None and self.replica.ready
        return checks

    def role_problems(self) -> dict[str, str | None]:
        """Each role's problem (dead, stuck) or None: what liveness and readiness report."""
        limit = self.settings.stuck_after_s
        return {name: progress.problem(limit) for name, progress in self.roles.items()}

    def progress(self, role: str, loops: bool = True) -> RoleProgress:
        """The progress of a role this process runs (health reports it)."""
        return self.roles.setdefault(role, RoleProgress(role, loops))

    def close(self) -> None:
        self.stopping.set()
        for closer in reversed(self.closers):
            closer()
        if self.index is not None:
            self.index.close()
        if self.items is not self.index:
            self.items.close()
        self.store.close()


def index_replica(settings: Settings, items: ItemStore) -> IndexReplica:
    """The loop that keeps `items` equal to the vector topic; a durable copy (an embedded
    shard) checkpoints the offsets it applied beside it."""
    durable = not isinstance(items, ItemVectorCopy)
    checkpoint = settings.qdrant_embedded_path / f"{items.collection}.offsets.json"
    return IndexReplica(
        consumer_config(settings, f"{settings.processing_group}-replica"),
        vector_topic(settings),
        items,
        Checkpoint(checkpoint if durable else None),
        name="index" if durable else "items",
        tombstone_retention_ms=settings.tombstone_retention_ms,
    )


def catalog_batches(
    processor: CatalogProcessor, stopping: threading.Event, policy: RetryPolicy
) -> Callable[[Sequence[RawMessage]], None]:
    """Applies a catalog batch with retries, isolating and dead-lettering the records that fail
    it; returns once the batch is applied and its dead letters acknowledged (raises Stopped
    only when the worker stops first)."""

    def poisoned(raw: RawMessage, error: BaseException) -> None:
        RECORDS_ISOLATED.labels("catalog").inc()
        processor.dead_letter(raw, processing_failed(error))

    def retrying(error: BaseException) -> None:
        BATCH_RETRIES.labels("catalog", type(error).__name__).inc()

    isolation = PoisonIsolation(processor.process, poisoned, is_outage, stopping, policy, retrying)

    def apply(raws: Sequence[RawMessage]) -> None:
        isolation.apply(raws)
        isolation.run(processor.flush_dead_letters, "dead-letter delivery")

    return apply


def interaction_processor(
    settings: Settings,
    index: ItemStore,
    store: SessionWriter,
    dead_letters: DeadLetterWriter,
    collab: CollabReader | None = None,
    pressure: QueryPressure | None = None,
) -> InteractionProcessor:
    """The interaction processor (no Kafka), configured from the settings, its compiled loop
    loaded."""
    kernels.warm_up()
    return InteractionProcessor(
        session_config(settings),
        index,
        store,
        dead_letters,
        event_decoder(settings),
        item_cache_size=settings.item_cache_size,
        collab=collab,
        write_chunk_events=settings.interaction_write_chunk,
        pressure=pressure,
        late_log_per_minute=settings.late_events_log_per_minute,
        waiting=WaitingRoom(settings.item_wait_ms / 1000, settings.item_wait_max_events),
    )


def interaction_consumer(
    settings: Settings,
    index: ItemStore,
    store: SessionWriter,
    dead_letters: DeadLetterWriter,
    collab: CollabReader | None = None,
    pressure: QueryPressure | None = None,
    progress: RoleProgress | None = None,
) -> InteractionConsumer:
    """The interaction processor and its Kafka loop, configured from the settings."""
    group = f"{settings.processing_group}-interactions"
    return InteractionConsumer(
        interaction_processor(settings, index, store, dead_letters, collab, pressure),
        consumer_config(settings, group) | lag_statistics("interactions"),
        settings.topic_interactions,
        batch_size=settings.interaction_batch_size,
        batch_timeout_s=settings.interaction_batch_timeout_ms / 1000,
        pressure=pressure,
        retry=retry_policy(settings),
        progress=progress,
    )


def ranking_weights(settings: Settings) -> RankingWeights:
    return RankingWeights(
        settings.rank_weight_similarity,
        settings.rank_weight_covisitation,
        settings.rank_weight_popularity,
        settings.rank_weight_collab,
        settings.rank_weight_next,
    )


def query_config(settings: Settings) -> QueryConfig:
    return QueryConfig(
        weights=ranking_weights(settings),
        covis_per_seed=settings.covis_per_seed,
        next_per_seed=settings.next_per_seed,
        max_per_category=settings.max_per_category,
        serve_hidden_items=settings.serve_hidden_items,
        similar_reason_min_cosine=settings.similar_reason_min_cosine,
        diversity=settings.diversity,
        filter_attributes=settings.filter_attributes,
    )


def recommender(runtime: Runtime) -> Recommender:
    settings = runtime.settings
    config = query_config(settings)
    assert runtime.index is not None  # Runtime.build opens it for the query role
    source = runtime.collab or runtime.collab_reader()
    collab = StateCollab(source, settings.collab_min_history)
    return Recommender(runtime.index, runtime.store, runtime.embedder, config, collab=collab)


def with_instance_id(settings: Settings) -> Settings:
    """The settings with the worker's static group membership id: the one set, else (when
    static membership is on and metrics are served) `<host name>-<metrics port>`."""
    if settings.kafka_instance_id or not settings.kafka_static_membership:
        return settings
    if not settings.metrics_port:
        return settings
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:150]
    return settings.model_copy(update={"kafka_instance_id": f"{host}-{settings.metrics_port}"})


def catalog_processor(runtime: Runtime) -> CatalogProcessor:
    settings = runtime.settings
    assert runtime.embedder is not None and runtime.index is not None  # the catalog role's
    return CatalogProcessor(
        runtime.index,
        runtime.embedder,
        runtime.dead_letters,
        event_decoder(settings),
        tombstone_retention_ms=settings.tombstone_retention_ms,
        vector_log=VectorLogWriter(kafka_config(settings), vector_topic(settings)),
        filter_attributes=settings.filter_attributes,
    )


def query_worker(runtime: Runtime) -> QueryWorker:
    settings = runtime.settings
    return QueryWorker(
        recommender(runtime),
        consumer_config(settings, f"{settings.processing_group}-query") | lag_statistics("query"),
        kafka_config(settings),
        settings.topic_requests,
        settings.topic_responses,
        runtime.dead_letters,
        max_queue_ms=settings.query_max_queue_ms,
        threads=settings.query_threads,
        pressure=runtime.pressure,
        reply_topics=settings.allowed_reply_topics,
        progress=runtime.progress("query"),
        owned=RequestOwnership(pipeline_versions(settings), settings.pipeline_version).read,
    )


def collab_installer(runtime: Runtime) -> CollabInstaller:
    """Installs staged versions: into the Qdrant server's slots, or (embedded replicas) only
    moves the pointer, each replica then writing its own slot (Runtime.collab)."""
    return CollabInstaller(collab_versions(runtime.settings), runtime.shared_index, runtime.collab)
