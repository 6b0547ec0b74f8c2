"""Ingest benchmark (a benchmark, not a test: it asserts nothing).

1. Interactions: E events (Zipf-distributed users and items) in a 12-partition topic.
   Baseline: one confluent-kafka consumer reading the same topic raw (batch consume, no work).
   Second baseline: a minimal Python loop (consume, parse, one vector update per event, one
   Redis write per user and batch; none of the features): the floor of any Python processor.
   Measured: the interaction processor's own consumer (the code the worker runs), from Kafka to
   applied and committed Redis state. All three in this one process, on this machine, in one
   run.
   Then the processor's two halves apart, on the same stream from empty state: its Python work
   (decode, apply, encode the writes; no Kafka, the writes kept instead of run), and Redis's
   (those writes run back to back, with recstream's Redis module and, as its baseline, with the
   Lua script). Each half alone bounds the whole.
   Then all of it again with a collaborative (ALS) version active, so every batch also folds its
   users in (issue #6); the first run is its baseline.
2. Catalog: N items through the catalog processor (decode, hash check, all-MiniLM-L6-v2 on the
   CPU, upsert into embedded Qdrant), consumed from Kafka in batches of 64; then the same items
   re-sent with a newer event time, which the hash check must skip without embedding.

Prints one JSON object; docs/benchmarks.md records the figures with the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer
from workload import item_vectors, produce_interactions, seed_index

from recstream.compose import collab_versions, interaction_consumer, interaction_processor
from recstream.core.collab import CollabModel
from recstream.core.index import collection_name
from recstream.core.settings import Settings, load_settings
from recstream.infra import topics
from recstream.infra.clients import kafka_config, redis_client
from recstream.infra.dlq import DeadLetterWriter
from recstream.infra.embedder import DEFAULT_MODEL_ID, SentenceTransformerEmbedder
from recstream.infra.messages import RawMessage, from_kafka
from recstream.infra.stores.collab_store import CollabReader
from recstream.infra.stores.keys import KeySpace
from recstream.infra.stores.qdrant_edge_index import QdrantEdgeIndex
from recstream.infra.stores.registry import redis_session_store
from recstream.infra.stores.session_store import RedisSessionStore
from recstream.schemas.events import CatalogEvent
from recstream.streams.catalog import CatalogProcessor
from recstream.worker import fewer_garbage_collections, single_threaded_blas


def _topic_reader(settings: Settings, role: str) -> Consumer:
    """A consumer of the interactions topic from its start, in a group of its own."""
    consumer = Consumer(
        kafka_config(settings)
        | {
            "group.id": f"{settings.consumer_group}-{role}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.topic_interactions])
    return consumer


def _raw_consume_rate(settings: Settings, events: int) -> float:
    consumer = _topic_reader(settings, "raw")
    seen, began = 0, 0.0
    while seen < events:
        batch = consumer.consume(5000, 1.0)
        if batch and not began:
            began = time.perf_counter()
        seen += sum(1 for m in batch if m.error() is None)
    elapsed = time.perf_counter() - began
    consumer.close()
    return events / elapsed


def _minimal_loop_rate(settings: Settings, events: int, items: int) -> float:
    """A second baseline: the least a Python processor of this topic must do per event, with
    none of the features (no validation, guards, history, counters, co-visitation or
    exactly-once write). Consume in batches, orjson.loads, one numpy decay + add + normalise of
    the user's vector, one pipelined HSET per user and batch, commit. The gap between this and
    the processor is what the features cost; the gap between this and the raw consume is the
    floor of any Python loop on this machine."""
    vectors = dict(zip((f"i{n}" for n in range(items)), item_vectors(items), strict=True))
    client = redis_client(settings)
    keys = KeySpace(settings.redis_namespace)  # under its pattern: deleted with the namespace
    consumer = _topic_reader(settings, "minimal")
    users: dict[str, np.ndarray] = {}
    done, began = 0, 0.0
    while done < events:
        batch = [m for m in consumer.consume(5000, 1.0) if m.error() is None]
        if batch and not began:
            began = time.perf_counter()
        changed = {}
        for message in batch:
            event = orjson.loads(message.value() or b"{}")
            user, item = event["user_id"], vectors[event["item_id"]]
            vector = users.get(user)
            updated = item if vector is None else 0.5 * vector + item
            users[user] = changed[user] = updated / np.sqrt(updated @ updated)
        pipe = client.pipeline(transaction=False)
        for user, vector in changed.items():
            pipe.hset(f"{keys.pattern()[:-1]}minimal:{user}", "vec", vector.tobytes())
        pipe.execute()
        if batch:
            consumer.commit(asynchronous=False)
        done += len(batch)
    elapsed = time.perf_counter() - began
    consumer.close()
    client.close()
    return events / elapsed


def _redis_cpu_seconds(settings: Settings) -> np.ndarray:
    """CPU time (user + system) the Redis server has used, from INFO: [its own process (the
    scripts, the AOF writes), its finished fork children (AOF rewrites, snapshots)]. The
    children run on another core, beside the processor: the first figure alone undercounts."""
    client = redis_client(settings)
    try:
        info = client.info("cpu")
        return np.array(
            [
                float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
                float(info["used_cpu_user_children"]) + float(info["used_cpu_sys_children"]),
            ]
        )
    finally:
        client.close()


def _per_event_us(seconds: np.ndarray, events: int) -> list[float]:
    return [round(float(value) / events * 1e6, 1) for value in seconds]


def _publish_collab(settings: Settings, index: QdrantEdgeIndex, items: int, factors: int) -> None:
    """A collaborative version over the bench items (random factors: only the cost matters)."""
    rng = np.random.default_rng(4)
    ids = [f"i{n}" for n in range(items)]
    model = CollabModel(
        0, ids, (rng.normal(size=(items, factors)) * 0.1).astype(np.float32), 0.1, 1.0
    )
    versions = collab_versions(settings)
    versions.stage(model, None)
    versions.install_staged(index)


def bench_interactions(
    base: Settings, events: int, users: int, items: int, collab_factors: int = 0
) -> dict[str, Any]:
    tag = f"bench{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        settings = base.isolated(tag, qdrant_path=Path(tmp))
        specs = topics.planned_topics(settings)
        topics.ensure_topics(settings, specs)
        index = seed_index(settings, items, collab_factors)
        try:
            produce_s = produce_interactions(settings, events, users, items)
            raw_rate = _raw_consume_rate(settings, events)
            minimal_rate = _minimal_loop_rate(settings, events, items)
            reader = None
            if collab_factors:
                _publish_collab(settings, index, items, collab_factors)
                reader = CollabReader(collab_versions(settings), settings.collab_refresh_s)
            consumer = interaction_consumer(
                settings.model_copy(update={"item_cache_size": items}),
                index,
                redis_session_store(settings),
                DeadLetterWriter(kafka_config(settings)),
                reader,
            )
            # Timed from the first commit (group join and the first batch excluded, so the
            # first batch's events are not counted either: a bigger batch gains nothing from it).
            applied, counted, began = 0, 0, 0.0
            cpu_began, redis_cpu_began = 0.0, np.zeros(2)
            while applied < events:
                count = consumer.run_once()
                if began:
                    counted += count
                elif count:
                    began, cpu_began = time.perf_counter(), time.process_time()
                    redis_cpu_began = _redis_cpu_seconds(settings)
                applied += count
            elapsed = time.perf_counter() - began
            cpu = time.process_time() - cpu_began
            redis_cpu = _redis_cpu_seconds(settings) - redis_cpu_began
            consumer.close()
            rate = counted / elapsed
            halves = _halves(settings, index, events, items, reader)
        finally:
            index.close()
            topics.delete_topics(settings, [s.name for s in specs])
            store = redis_session_store(settings)
            store.delete_namespace()
            store.close()
    redis_us = _per_event_us(redis_cpu, counted)
    return {
        "events": events,
        "users": users,
        "items": items,
        "batch_size": base.interaction_batch_size,
        "write_chunk": base.interaction_write_chunk,
        "collab_factors": collab_factors,
        "produce_events_per_s": round(events / produce_s),
        "raw_consume_events_per_s": round(raw_rate),
        "processor_events_per_s": round(rate),
        "ratio_to_raw_consume": round(rate / raw_rate, 3),
        "processor_cpu_us_per_event": round(cpu / counted * 1e6, 1),
        "redis_cpu_us_per_event": redis_us[0],
        "redis_background_cpu_us_per_event": redis_us[1],
        "minimal_python_loop_events_per_s": round(minimal_rate),
        "ratio_to_minimal_loop": round(rate / minimal_rate, 3),
        **halves,
    }


class _KeptWrites(RedisSessionStore):
    """The real store (state loads included), except that each write is kept, encoded, instead
    of run."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.kept: list[bytes] = []

    def write_encoded(self, payload: bytes) -> None:
        self.kept.append(payload)


def _consume_all(settings: Settings, events: int) -> list[RawMessage]:
    consumer = _topic_reader(settings, "halves")
    raws: list[RawMessage] = []
    while len(raws) < events:
        raws += [from_kafka(m) for m in consumer.consume(5000, 1.0) if m.error() is None]
    consumer.close()
    return raws


def _halves(
    settings: Settings,
    index: QdrantEdgeIndex,
    events: int,
    items: int,
    collab: CollabReader | None,
) -> dict[str, Any]:
    """The processor's two halves apart, on the same stream from an empty namespace. Python:
    decode, apply and encode the writes, as the processor does (no Kafka; the writes kept, not
    run). Redis: those writes run back to back. Each half's rate bounds the whole; Redis runs
    them in one thread, so its rate is a ceiling that no processor in front of it can pass."""
    raws = _consume_all(settings, events)
    keeping = redis_session_store(settings, _KeptWrites)
    assert isinstance(keeping, _KeptWrites)  # for the type checker: `kind` made it one
    keeping.delete_namespace()
    processor = interaction_processor(
        settings.model_copy(update={"item_cache_size": items}),
        index,
        keeping,
        DeadLetterWriter(kafka_config(settings)),
        collab,
    )
    batch = settings.interaction_batch_size
    began, cpu_began = time.perf_counter(), time.process_time()
    for start in range(0, len(raws), batch):
        processor.store(processor.prepare(raws[start : start + batch]))
    python_s, python_cpu = time.perf_counter() - began, time.process_time() - cpu_began
    module = keeping.has_native_write()
    keeping.close()
    events = len(raws)
    result: dict[str, Any] = {
        "redis_write_module": module,
        "python_half_events_per_s": round(events / python_s),
        "python_half_cpu_us_per_event": round(python_cpu / events * 1e6, 1),
    }
    # The native write (recstream's Redis module) and, as its baseline, the Lua script.
    for path, native in (("redis_half", None), ("redis_half_script", False)):
        seconds, redis_cpu = _replay(settings, keeping.kept, native)
        own, background = _per_event_us(redis_cpu, events)
        result |= {
            f"{path}_events_per_s": round(events / seconds),
            f"{path}_cpu_us_per_event": own,
            f"{path}_background_cpu_us_per_event": background,
        }
    return result


def _replay(
    settings: Settings, writes: list[bytes], native: bool | None
) -> tuple[float, np.ndarray]:
    """Seconds and Redis CPU seconds to run the writes back to back into an empty namespace."""
    store = redis_session_store(settings)
    store.native_write = native
    store.delete_namespace()
    redis_cpu_began, began = _redis_cpu_seconds(settings), time.perf_counter()
    for payload in writes:
        store.write_encoded(payload)
    seconds = time.perf_counter() - began
    redis_cpu = _redis_cpu_seconds(settings) - redis_cpu_began
    store.delete_namespace()
    store.close()
    return seconds, redis_cpu


def _catalog_texts(count: int, dataset: Path | None) -> list[CatalogEvent]:
    now = int(time.time() * 1000)
    movies = dataset / "movies.csv" if dataset else None
    if movies and movies.exists():
        import csv

        with movies.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))[:count]
        return [
            CatalogEvent(
                f"c{r['movieId']}",
                f"m{r['movieId']}",
                "upsert",
                now,
                title=r["title"],
                category=r["genres"].split("|")[0],
                tags=tuple(r["genres"].split("|")),
            )
            for r in rows
        ]
    return [
        CatalogEvent(
            f"c{n}",
            f"m{n}",
            "upsert",
            now,
            title=f"Synthetic item {n}",
            category=f"c{n % 20}",
            description=f"A description of item number {n}.",
        )
        for n in range(count)
    ]


def _run_catalog(
    settings: Settings, processor: CatalogProcessor, group: str, count: int
) -> tuple[float, dict[str, int]]:
    consumer = Consumer(
        kafka_config(settings)
        | {"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    consumer.subscribe([settings.topic_catalog])
    done, began = 0, 0.0
    outcomes: dict[str, int] = {}
    while done < count:
        messages = [
            m for m in consumer.consume(settings.embed_batch_size, 1.0) if m.error() is None
        ]
        if not messages:
            continue
        if not began:
            began = time.perf_counter()
        plan = processor.process([from_kafka(m) for m in messages])
        consumer.commit(asynchronous=False)
        for key, value in plan.outcomes.items():
            outcomes[key] = outcomes.get(key, 0) + value
        done += len(messages)
    consumer.close()
    return count / (time.perf_counter() - began), outcomes


def bench_catalog(base: Settings, count: int, dataset: Path | None) -> dict[str, Any]:
    tag = f"bench{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        settings = base.isolated(tag, qdrant_path=Path(tmp))
        specs = topics.planned_topics(settings)
        topics.ensure_topics(settings, specs)
        embedder = SentenceTransformerEmbedder(
            settings.resolved_model_path, DEFAULT_MODEL_ID, threads=settings.embed_threads
        )
        name = collection_name(embedder.model_id, embedder.dimension)
        index = QdrantEdgeIndex.open(settings.qdrant_embedded_path / name, name, embedder.dimension)
        processor = CatalogProcessor(
            index,
            embedder,
            DeadLetterWriter(kafka_config(settings)),
            tombstone_retention_ms=settings.tombstone_retention_ms,
        )
        items = _catalog_texts(count, dataset)
        producer = Producer(kafka_config(settings))
        try:
            for event in items:
                producer.produce(
                    settings.topic_catalog, event.to_json(), key=event.item_id.encode()
                )
            producer.flush()
            first_rate, first = _run_catalog(settings, processor, f"{tag}-1", len(items))
            for event in items:  # same content, newer event time
                newer = CatalogEvent(
                    event.event_id + "r",
                    event.item_id,
                    "upsert",
                    event.event_time + 1,
                    title=event.title,
                    description=event.description,
                    category=event.category,
                    tags=event.tags,
                )
                producer.produce(
                    settings.topic_catalog, newer.to_json(), key=event.item_id.encode()
                )
            producer.flush()
            second_rate, second = _run_catalog(settings, processor, f"{tag}-2", 2 * len(items))
        finally:
            index.close()
            topics.delete_topics(settings, [s.name for s in specs])
    # The second group reads both rounds: round one again (unchanged) and the re-sent items.
    return {
        "items": len(items),
        "source": "movielens titles+genres" if dataset else "synthetic",
        "embed_threads": settings.embed_threads,
        "embedded_items_per_s": round(first_rate, 1),
        "first_pass_outcomes": first,
        "resent_pass_items_per_s": round(second_rate, 1),
        "resent_pass_outcomes": second,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument(
        "--batch", type=int, help="RECSTREAM_INTERACTION_BATCH_SIZE (default: the setting's)"
    )
    parser.add_argument(
        "--write-chunk", type=int, help="RECSTREAM_INTERACTION_WRITE_CHUNK (default: the setting's)"
    )
    parser.add_argument("--catalog-items", type=int, default=2000)
    parser.add_argument(
        "--dataset",
        type=Path,
        default=Path(os.environ.get("RECSTREAM_DATASET_DIR", "../shared/datasets/movielens-small")),
    )
    parser.add_argument("--skip-catalog", action="store_true")
    parser.add_argument(
        "--collab-factors",
        type=int,
        default=64,
        help="also measure with a collaborative version of this many factors active (0: skip)",
    )
    args = parser.parse_args()
    single_threaded_blas()  # as the worker does
    fewer_garbage_collections()
    settings = load_settings()
    for name, value in (
        ("interaction_batch_size", args.batch),
        ("interaction_write_chunk", args.write_chunk),
    ):
        if value is not None:
            settings = settings.model_copy(update={name: value})
    result: dict[str, Any] = {
        "bench": "ingest",
        "machine": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    result["interactions"] = bench_interactions(settings, args.events, args.users, args.items)
    if args.collab_factors:  # the same run, the same stream, users folded in on every batch
        result["interactions_with_collab"] = bench_interactions(
            settings, args.events, args.users, args.items, args.collab_factors
        )
    if not args.skip_catalog:
        dataset = args.dataset if args.dataset.exists() else None
        result["catalog"] = bench_catalog(settings, args.catalog_items, dataset)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
