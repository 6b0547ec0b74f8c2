"""`recstream worker --roles ...`: one process hosting the chosen roles around one faust app.

Embedded mode: an embedded Qdrant shard can be opened by one process only, so one worker hosts
every role and shares the index. The catalog processor is a faust agent (its per-event cost is
irrelevant next to embedding); the interaction processor is a confluent-kafka batch loop in its own
thread (see streams/interactions.py). Embedding and index writes run in a one-thread pool so the
event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import re
import socket
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import faust
from threadpoolctl import threadpool_limits

from recstream import __version__
from recstream.consumers.pressure import QueryPressure
from recstream.consumers.query_worker import QueryWorker
from recstream.consumers.ranking import RankingWeights
from recstream.consumers.recommender import QueryConfig, Recommender
from recstream.errors import PortInUseError, RecstreamError
from recstream.http import HealthChecks, serve
from recstream.infra import topics
from recstream.infra.clients import (
    check_kafka,
    check_redis,
    consumer_config,
    faust_options,
    is_outage,
    kafka_config,
    lag_statistics,
    redact_url,
    redis_client,
)
from recstream.infra.kafka_server import kafka_answers
from recstream.progress import RoleProgress, run_role
from recstream.schemas.events import EventDecoder, TimeBounds
from recstream.settings import Settings
from recstream.stores.collab_store import (
    CollabInstaller,
    CollabReader,
    CollabVersions,
    StateCollab,
)
from recstream.stores.keys import KeySpace
from recstream.stores.session_store import RedisSessionStore, SessionStore
from recstream.stores.vector_index import VectorIndex, open_vector_index, stored_dimension
from recstream.streams import kernels, metrics
from recstream.streams.catalog import CatalogProcessor
from recstream.streams.dlq import DeadLetterWriter
from recstream.streams.embedder import SentenceTransformerEmbedder, model_id_for
from recstream.streams.interactions import (
    InteractionConsumer,
    InteractionProcessor,
    processing_failed,
)
from recstream.streams.isolation import PoisonIsolation, RetryPolicy
from recstream.streams.messages import RawMessage
from recstream.streams.session import SessionConfig

log = logging.getLogger(__name__)
ROLES = ("catalog", "interactions", "query", "train")
EMBEDDING_ROLES = frozenset({"catalog", "query"})


def session_config(settings: Settings) -> SessionConfig:
    return SessionConfig(
        weights=settings.event_weights,
        rating_center=settings.rating_center,
        rating_weight_per_point=settings.rating_weight_per_point,
        half_life_ms=settings.session_half_life_ms,
        allowed_lateness_ms=settings.allowed_lateness_ms,
        covis_window=settings.covis_window,
        popularity_half_life_ms=settings.popularity_half_life_ms,
    )


def retry_policy(settings: Settings) -> RetryPolicy:
    """How a failing batch is retried before its failing records are isolated (both roles)."""
    return RetryPolicy(max_attempts=settings.batch_max_attempts)


def event_decoder(settings: Settings) -> EventDecoder:
    return EventDecoder(TimeBounds(settings.min_event_time_ms, settings.max_clock_skew_ms))


def collab_versions(settings: Settings) -> CollabVersions:
    client = redis_client(settings)
    return CollabVersions(client, KeySpace(settings.redis_namespace), settings.collab_refresh_s)


def session_store(
    settings: Settings, kind: type[RedisSessionStore] = RedisSessionStore
) -> RedisSessionStore:
    return kind(
        redis_client(settings),
        KeySpace(settings.redis_namespace),
        history_cap=settings.history_cap,
        covis_max_neighbours=settings.covis_max_neighbours,
        popularity_half_life_ms=settings.popularity_half_life_ms,
        native_write=None if settings.redis_write_module else False,
        user_ttl_s=settings.user_state_ttl_s,
    )


def load_embedder(settings: Settings) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(
        settings.resolved_model_path,
        model_id_for(settings.model_path),
        threads=settings.embed_threads,
        batch_size=settings.embed_batch_size,
    )


@dataclass
class Runtime:
    """The adapters one worker process shares between its roles."""

    settings: Settings
    index: VectorIndex
    embedder: SentenceTransformerEmbedder | None  # loaded only for the roles that embed
    store: RedisSessionStore
    dead_letters: DeadLetterWriter
    # Requests in hand in this process: the interaction loop steps back for them.
    pressure: QueryPressure = field(default_factory=QueryPressure)
    roles: dict[str, RoleProgress] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)
    closers: list[Callable[[], None]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, roles: Sequence[str] = ROLES) -> Runtime:
        """The adapters for these roles. The model (seconds to load, most of a worker's start)
        is loaded only where text is embedded (catalog, query); the others need its dimension
        only, which the collection the catalog processor made already carries."""
        model_id = model_id_for(settings.model_path)
        dimension = None if EMBEDDING_ROLES & set(roles) else stored_dimension(settings, model_id)
        embedder = load_embedder(settings) if dimension is None else None
        index = open_vector_index(
            settings,
            model_id,
            dimension or embedder.dimension,  # type: ignore[union-attr]  # one of them is set
            cache_vectors=settings.vector_cache_items,
            collab_dimension=settings.collab_factors,
        )
        return cls(
            settings,
            index,
            embedder,
            session_store(settings),
            DeadLetterWriter(kafka_config(settings)),
        )

    def collab_reader(self) -> CollabReader:
        """A reader of the active collaborative version (one per role: each loads its own)."""
        return CollabReader(collab_versions(self.settings), self.settings.collab_refresh_s)

    def health_checks(self) -> dict[str, Callable[[], bool]]:
        return {
            "kafka": lambda: kafka_answers(self.settings, timeout_s=1.0),
            "redis": self.store.ping,
            "index": lambda: self.index.count() >= 0,
        }

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
        self.index.close()
        self.store.close()


def _add_catalog_agent(app: faust.App, runtime: Runtime, pool: ThreadPoolExecutor) -> None:
    settings = runtime.settings
    assert runtime.embedder is not None  # Runtime.build loads it for the catalog role
    processor = CatalogProcessor(
        runtime.index,
        runtime.embedder,
        runtime.dead_letters,
        event_decoder(settings),
        tombstone_retention_ms=settings.tombstone_retention_ms,
    )
    progress = runtime.progress("catalog", loops=False)
    apply_batch = catalog_batches(processor, runtime.stopping, retry_policy(settings))
    topic = app.topic(settings.topic_catalog, value_serializer="raw", key_serializer="raw")

    @app.agent(topic, name="catalog")
    async def catalog(stream: Any) -> AsyncIterator[None]:  # faust's StreamT lacks take_events
        loop = asyncio.get_running_loop()
        within = settings.catalog_batch_timeout_ms / 1000
        async for events in stream.take_events(settings.embed_batch_size, within=within):
            raws = [_raw_from_faust(event) for event in events]
            progress.holding(id(raws))
            # take_events acks the batch once this body returns: apply it fully first (or
            # dead-letter the records that fail it).
            await loop.run_in_executor(pool, apply_batch, raws)
            progress.released(id(raws))
            yield None


def catalog_batches(
    processor: CatalogProcessor, stopping: threading.Event, policy: RetryPolicy
) -> Callable[[Sequence[RawMessage]], None]:
    """Applies a catalog batch with retries, isolating and dead-lettering the records that fail
    it; returns once the batch is applied and its dead letters acknowledged (raises Stopped
    only when the worker stops first)."""

    def poisoned(raw: RawMessage, error: BaseException) -> None:
        metrics.RECORDS_ISOLATED.labels("catalog").inc()
        processor.dead_letter(raw, processing_failed(error))

    def retrying(error: BaseException) -> None:
        metrics.BATCH_RETRIES.labels("catalog", type(error).__name__).inc()

    isolation = PoisonIsolation(processor.process, poisoned, is_outage, stopping, policy, retrying)

    def apply(raws: Sequence[RawMessage]) -> None:
        isolation.apply(raws)
        isolation.run(processor.flush_dead_letters, "dead-letter delivery")

    return apply


def _raw_from_faust(event: Any) -> RawMessage:
    message = event.message
    headers = tuple((k, v or b"") for k, v in (message.headers or ()))
    return RawMessage(
        message.topic, message.partition, message.offset, message.key, message.value, headers
    )


def interaction_processor(
    settings: Settings,
    index: VectorIndex,
    store: SessionStore,
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
    )


def interaction_consumer(
    settings: Settings,
    index: VectorIndex,
    store: RedisSessionStore,
    dead_letters: DeadLetterWriter,
    collab: CollabReader | None = None,
    pressure: QueryPressure | None = None,
    progress: RoleProgress | None = None,
) -> InteractionConsumer:
    """The interaction processor and its Kafka loop, configured from the settings."""
    group = f"{settings.consumer_group}-interactions"
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


def _add_interaction_loop(app: faust.App, runtime: Runtime) -> None:
    consumer = interaction_consumer(
        runtime.settings,
        runtime.index,
        runtime.store,
        runtime.dead_letters,
        runtime.collab_reader(),
        runtime.pressure,
        runtime.progress("interactions"),
    )
    _run_in_thread(app, runtime, "interactions", consumer.run, consumer.stop)


def ranking_weights(settings: Settings) -> RankingWeights:
    return RankingWeights(
        settings.rank_weight_similarity,
        settings.rank_weight_covisitation,
        settings.rank_weight_popularity,
        settings.rank_weight_collab,
    )


def recommender(runtime: Runtime) -> Recommender:
    settings = runtime.settings
    config = QueryConfig(
        weights=ranking_weights(settings),
        covis_per_seed=settings.covis_per_seed,
        max_per_category=settings.max_per_category,
        serve_hidden_items=settings.serve_hidden_items,
    )
    collab = StateCollab(runtime.collab_reader(), settings.collab_min_history)
    return Recommender(runtime.index, runtime.store, runtime.embedder, config, collab=collab)


def _add_query_loop(app: faust.App, runtime: Runtime) -> None:
    settings = runtime.settings
    worker = QueryWorker(
        recommender(runtime),
        consumer_config(settings, f"{settings.consumer_group}-query") | lag_statistics("query"),
        kafka_config(settings),
        settings.topic_requests,
        settings.topic_responses,
        runtime.dead_letters,
        max_queue_ms=settings.query_max_queue_ms,
        threads=settings.query_threads,
        pressure=runtime.pressure,
        reply_topics=settings.allowed_reply_topics,
        progress=runtime.progress("query"),
    )
    _run_in_thread(app, runtime, "query", worker.run, worker.stop)


def _add_training_loop(app: faust.App, runtime: Runtime) -> None:
    """`recstream train` on a schedule inside the worker (the `train` role)."""
    from recstream.train import describe, train

    stopping = threading.Event()
    every = runtime.settings.collab_train_every_s

    def run() -> None:
        while not stopping.wait(every):
            try:
                log.info(describe(train(runtime.settings, runtime.index)))
            except RecstreamError as error:  # e.g. too little data yet: try again next time
                log.warning("collaborative training skipped: %s", error)
            except Exception:
                log.exception("collaborative training failed; the current version stays")

    _run_in_thread(app, runtime, "train", run, stopping.set)


def _add_collab_installer(app: faust.App, runtime: Runtime) -> None:
    """Every worker holds the vector index, so every worker may install a staged collaborative
    version (`recstream train` run as its own process only stages it; a Redis lock lets one
    worker at a time write it)."""
    installer = CollabInstaller(collab_versions(runtime.settings), runtime.index)
    stopping = threading.Event()

    def run() -> None:
        installer.run(stopping, runtime.settings.collab_refresh_s)

    _run_in_thread(app, runtime, "collab-install", run, stopping.set)


def _run_in_thread(
    app: faust.App, runtime: Runtime, name: str, run: Callable[[], None], stop: Callable[[], None]
) -> None:
    """Start `run` in its own thread when the app starts; `stop` and join it on shutdown."""
    progress = runtime.progress(name, loops=name in ("interactions", "query"))
    thread = threading.Thread(target=run_role, args=(progress, run), name=name, daemon=True)

    async def start() -> None:
        thread.start()

    app.task(start)

    def stop_and_join() -> None:
        stop()
        if thread.is_alive():
            thread.join(timeout=30)

    runtime.closers.append(stop_and_join)


def build_app(runtime: Runtime, roles: Sequence[str]) -> faust.App:
    settings = runtime.settings
    # faust creates `<datadir>/v1/tables` even with in-memory tables: keep it under the state
    # directory, not in whatever directory the worker was started from.
    datadir = settings.state_dir / "faust" / settings.consumer_group
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.consumer_group,
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        topic_replication_factor=settings.kafka_replication_factor,
        consumer_auto_offset_reset="earliest",
        topic_disable_leader=False,
        **faust_options(settings),
    )
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
    if "catalog" in roles:
        _add_catalog_agent(app, runtime, pool)
    if "interactions" in roles:
        _add_interaction_loop(app, runtime)
    if "query" in roles:
        _add_query_loop(app, runtime)
    if "train" in roles:
        _add_training_loop(app, runtime)
    _add_collab_installer(app, runtime)

    async def _shutdown(_: Any, **__: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(None, runtime.close)
        pool.shutdown(wait=False)

    app.on_before_shutdown.connect(_shutdown)  # type: ignore[arg-type]

    async def announce() -> None:  # once faust has set up logging
        log.info(banner(settings, roles))

    app.task(announce)
    return app


def banner(settings: Settings, roles: Sequence[str]) -> str:
    """The worker's start line: what it runs, what it reads, where its metrics are."""
    group = settings.consumer_group
    reads = {
        "catalog": f"{settings.topic_catalog} (group {group})",
        "interactions": f"{settings.topic_interactions} (group {group}-interactions)",
        "query": f"{settings.topic_requests} (group {group}-query) -> {settings.topic_responses}",
        "train": f"{settings.topic_interactions} every {settings.collab_train_every_s:g} s",
    }
    member = settings.kafka_instance_id or "dynamic"
    metrics = (
        f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"
        if settings.metrics_port
        else "off"
    )
    return (
        f"recstream worker {__version__}: roles {', '.join(roles)}; reads "
        + "; ".join(reads[role] for role in roles)
        + f"; Kafka {settings.bootstrap_servers} (member {member}); Redis "
        + f"{redact_url(settings.redis_address)}; metrics and health {metrics}"
    )


def single_threaded_blas() -> None:
    """numpy's BLAS on one thread for the rest of the process. Its work in a worker is small (a
    batch's fold-in solves, a request's candidate scores), and a second BLAS thread mostly spins
    on the core Redis and Kafka need: about 20 µs of CPU per event with a collaborative version
    active (docs/benchmarks.md). torch's threads (the embedder) are not BLAS's: unaffected."""
    threadpool_limits(1, "blas")


# CPython's default is (700, 10, 10): a young-generation collection every 700 net container
# allocations.
GC_THRESHOLDS = (50_000, 20, 100)


def fewer_garbage_collections() -> None:
    """Run the cycle collector far less often than CPython's default. The interaction processor
    allocates, and keeps until the batch is stored, hundreds of thousands of small dicts and
    lists per batch (states, seen, co-visits, the write payload), and each collection scanned
    them again: with the default, 2,397 collections per 300,000 events took about a third of the
    processor's CPU (docs/benchmarks.md). Reference cycles are rare in this code, so collecting
    them later holds little memory."""
    gc.set_threshold(*GC_THRESHOLDS)


def serve_metrics(settings: Settings, health: HealthChecks) -> None:
    """The operator endpoint on RECSTREAM_METRICS_HOST:RECSTREAM_METRICS_PORT; a port in use
    is a one-line error naming the setting."""
    try:
        serve(settings.metrics_port, health, settings.metrics_host)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        raise PortInUseError(
            "the metrics endpoint", settings.metrics_port, "RECSTREAM_METRICS_PORT"
        ) from None


def with_instance_id(settings: Settings) -> Settings:
    """The settings with the worker's static group membership id: the one set, else (when
    static membership is on and metrics are served) `<host name>-<metrics port>`."""
    if settings.kafka_instance_id or not settings.kafka_static_membership:
        return settings
    if not settings.metrics_port:
        return settings
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:150]
    return settings.model_copy(update={"kafka_instance_id": f"{host}-{settings.metrics_port}"})


def run_worker(settings: Settings, roles: Sequence[str]) -> int:
    """Create topics, build the adapters, serve metrics, and run until SIGTERM/SIGINT."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise RecstreamError(f"unknown roles {unknown}; choose from {list(ROLES)}")
    settings = with_instance_id(settings)
    single_threaded_blas()
    fewer_garbage_collections()
    check_kafka(settings, settings.connect_timeout_s)  # refused: one line naming the setting
    check_redis(settings, settings.connect_timeout_s)
    topics.ensure_topics(settings, topics.planned_topics(settings))
    health = HealthChecks({})
    if settings.metrics_port:
        serve_metrics(settings, health)  # up at once: /health says 503 while we load
    runtime = Runtime.build(settings, roles)
    health.add_checks(runtime.health_checks())
    health.watch_roles(runtime.role_problems)
    app = build_app(runtime, roles)
    worker = faust.Worker(app, loglevel="INFO", quiet=True)
    worker.execute_from_commandline()
    return 0
