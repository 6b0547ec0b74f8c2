"""`recstream worker --roles ...`: one process hosting the chosen roles around one faust app.

Run one process per role (the Procfile), or several roles in one. Every process that needs item
vectors keeps its own copy of the vector topic (recstream.compose.Runtime; its roles start once
the copy has caught up). The catalog processor is a faust agent (its per-event cost is
irrelevant next to embedding); the interaction processor, the query worker and the replica are
confluent-kafka loops in their own threads. Embedding and index writes run in a one-thread pool
so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
from threadpoolctl import threadpool_limits

from recstream import __version__
from recstream.compose import (
    ROLES,
    Runtime,
    catalog_batches,
    catalog_processor,
    collab_installer,
    interaction_consumer,
    migrate_state,
    pipeline_versions,
    query_worker,
    retry_policy,
    with_instance_id,
)
from recstream.core.errors import RecstreamError
from recstream.core.progress import RoleProgress, run_role
from recstream.core.settings import Settings
from recstream.infra import topics
from recstream.infra.clients import check_kafka, check_redis, faust_options, redact_url
from recstream.infra.embedder import model_id_for
from recstream.infra.errors import PortInUseError
from recstream.infra.http import HealthChecks, serve
from recstream.infra.messages import RawMessage
from recstream.infra.metrics import export_role_health

log = logging.getLogger(__name__)
# A role's loop ended by an exception: the process exits 1 (after a clean shutdown of the rest)
# instead of living on with a dead role, so systemd, Kubernetes or honcho start a fresh one.
ROLE_DIED = threading.Event()


def _add_catalog_agent(app: faust.App, runtime: Runtime, pool: ThreadPoolExecutor) -> None:
    settings = runtime.settings
    processor = catalog_processor(runtime)
    progress = runtime.progress("catalog", loops=False)
    apply_batch = catalog_batches(processor, runtime.stopping, retry_policy(settings))
    topic = app.topic(settings.topic_catalog, value_serializer="raw", key_serializer="raw")

    @app.agent(topic, name="catalog")
    async def catalog(stream: Any) -> AsyncIterator[None]:  # faust's StreamT lacks take_events
        loop = asyncio.get_running_loop()
        within = settings.catalog_batch_timeout_ms / 1000
        if runtime.replica is not None:  # plan against every item the log holds
            await loop.run_in_executor(None, _wait_ready, runtime)
        async for events in stream.take_events(settings.embed_batch_size, within=within):
            raws = [_raw_from_faust(event) for event in events]
            progress.holding(id(raws))
            # take_events acks the batch once this body returns: apply it fully first (or
            # dead-letter the records that fail it).
            await loop.run_in_executor(pool, apply_batch, raws)
            progress.released(id(raws))
            yield None


def _raw_from_faust(event: Any) -> RawMessage:
    message = event.message
    headers = tuple((k, v or b"") for k, v in (message.headers or ()))
    return RawMessage(
        message.topic, message.partition, message.offset, message.key, message.value, headers
    )


def _wait_ready(runtime: Runtime, progress: RoleProgress | None = None) -> None:
    """Until this process's copy of the item vectors has caught up (or the worker stops); a
    role waiting for it is alive, not stuck."""
    replica = runtime.replica
    while replica is not None and not replica.wait_ready(1.0) and not runtime.stopping.is_set():
        if progress is not None:
            progress.beat()


def _once_ready(runtime: Runtime, role: str, run: Callable[[], None]) -> Callable[[], None]:
    def run_when_ready() -> None:
        _wait_ready(runtime, runtime.progress(role))
        if not runtime.stopping.is_set():
            run()

    return run_when_ready


def _add_replica_loop(app: faust.App, runtime: Runtime) -> None:
    replica = runtime.replica
    assert replica is not None
    _run_in_thread(app, runtime, "replica", replica.run, replica.stop)


def _add_interaction_loop(app: faust.App, runtime: Runtime) -> None:
    consumer = interaction_consumer(
        runtime.settings,
        runtime.items,
        runtime.store,
        runtime.dead_letters,
        runtime.collab_reader(),
        runtime.pressure,
        runtime.progress("interactions"),
    )
    run = _once_ready(runtime, "interactions", consumer.run)  # an item's events need its vector
    _run_in_thread(app, runtime, "interactions", run, consumer.stop)


def _add_query_loop(app: faust.App, runtime: Runtime) -> None:
    worker = query_worker(runtime)
    _run_in_thread(app, runtime, "query", _once_ready(runtime, "query", worker.run), worker.stop)


def _add_training_loop(app: faust.App, runtime: Runtime) -> None:
    """`recstream train` on a schedule inside the worker (the `train` role)."""
    from recstream.train import describe, train

    stopping = threading.Event()
    every = runtime.settings.collab_train_every_s

    def run() -> None:
        while not stopping.wait(every):
            try:
                log.info(describe(train(runtime.settings, runtime.shared_index)))
            except RecstreamError as error:  # e.g. too little data yet: try again next time
                log.warning("collaborative training skipped: %s", error)
            except Exception:
                log.exception("collaborative training failed; the current version stays")

    _run_in_thread(app, runtime, "train", run, stopping.set)


def _add_collab_installer(app: faust.App, runtime: Runtime) -> None:
    """Any worker may switch to a staged collaborative version (`recstream train` run as its
    own process only stages it; a Redis lock lets one worker at a time switch); every embedded
    replica then writes it into its own slots."""
    installer = collab_installer(runtime)
    stopping = threading.Event()

    def run() -> None:
        installer.run(stopping, runtime.settings.collab_refresh_s)

    _run_in_thread(app, runtime, "collab-install", run, stopping.set)


def _run_in_thread(
    app: faust.App, runtime: Runtime, name: str, run: Callable[[], None], stop: Callable[[], None]
) -> None:
    """Start `run` in its own thread when the app starts; `stop` and join it on shutdown."""
    progress = runtime.progress(name, loops=name in ("interactions", "query"))

    def run_or_stop_worker() -> None:
        try:
            run_role(progress, run)
        except BaseException:
            log.exception(
                "role %s died: the worker stops, for its process manager to restart", name
            )
            ROLE_DIED.set()
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=run_or_stop_worker, name=name, daemon=True)

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
    datadir = settings.state_dir / "faust" / settings.processing_group
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.processing_group,
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        topic_replication_factor=settings.kafka_replication_factor,
        consumer_auto_offset_reset="earliest",
        topic_disable_leader=False,
        **faust_options(settings),
    )
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
    if runtime.replica is not None:
        _add_replica_loop(app, runtime)
    if "catalog" in roles:
        _add_catalog_agent(app, runtime, pool)
    if "interactions" in roles:
        _add_interaction_loop(app, runtime)
    if "query" in roles:
        _add_query_loop(app, runtime)
    if "train" in roles:
        _add_training_loop(app, runtime)
    if runtime.index is not None or not settings.qdrant_url:  # a server's slots need its index
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
    group = settings.processing_group
    queries = f"{group}-query"
    reads = {
        "catalog": f"{settings.topic_catalog} (group {group})",
        "interactions": f"{settings.topic_interactions} (group {group}-interactions)",
        "query": f"{settings.topic_requests} (group {queries}) -> {settings.topic_responses}",
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
    on the core Redis and Kafka need (docs/benchmarks.md has the cost). torch's threads (the
    embedder) are not BLAS's: unaffected."""
    threadpool_limits(1, "blas")


# CPython's default is (700, 10, 10): a young-generation collection every 700 net container
# allocations.
GC_THRESHOLDS = (50_000, 20, 100)


def fewer_garbage_collections() -> None:
    """Run the cycle collector far less often than CPython's default. The interaction processor
    allocates, and keeps until the batch is stored, hundreds of thousands of small dicts and
    lists per batch (states, seen, co-visits, the write payload), and each collection scans
    them again: with the default, collections take a large share of the processor's CPU
    (docs/benchmarks.md). Reference cycles are rare in this code, so collecting
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
    migrate_state(settings)
    pipeline_versions(settings).register(
        settings.pipeline_version, model_id_for(settings.model_path)
    )
    topics.ensure_topics(settings, topics.planned_topics(settings))
    health = HealthChecks({})
    if settings.metrics_port:
        serve_metrics(settings, health)  # up at once: /health says 503 while we load
    runtime = Runtime.build(settings, roles)
    health.add_checks(runtime.health_checks())
    health.watch_roles(runtime.role_problems)
    export_role_health(runtime.role_problems)
    app = build_app(runtime, roles)
    worker = faust.Worker(app, loglevel="INFO", quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit:
        if not ROLE_DIED.is_set():
            raise
    return 1 if ROLE_DIED.is_set() else 0
