"""Serving benchmark (a benchmark, not a test: it asserts nothing).

For each catalog size: items with random 384-d unit vectors in embedded Qdrant (HNSW built),
users given session vectors, seen sets and co-visits by real interaction events, then a real
`recstream worker --roles interactions,query` process. From this process, open-loop load: requests
are sent on a fixed schedule whatever the answers do, at each rate; end-to-end latency is from the
scheduled send to the response's arrival; service time is what the worker reports. Freshness: a
user's purchase is published and the user is asked again every 20 ms until the list changes.
Cold start: new users only, at the first rate, the popular list against the trending one
(`"trending": true`: velocity, one more Redis round trip), alternating twice.
Under ingest: a backlog of interaction events is published, then the first rate's load runs again
while the worker applies the backlog in the same process.
Baseline in the same run: brute-force numpy top-k over the same vectors (one query vector).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from workers import start_worker

from recstream.consumers.client import RecClient
from recstream.core.index import ItemPayload, collection_name
from recstream.core.settings import Settings, load_settings
from recstream.infra import topics
from recstream.infra.clients import kafka_config
from recstream.infra.embedder import DEFAULT_MODEL_ID
from recstream.infra.messages import poll_available
from recstream.infra.stores.qdrant_edge_index import QdrantEdgeIndex
from recstream.infra.stores.registry import redis_session_store
from recstream.infra.vector_log import publish_item_vectors
from recstream.metrics_probe import metric_total
from recstream.produce import send_waiting
from recstream.schemas.events import InteractionEvent
from recstream.schemas.requests import RecommendRequest, RequestCodec

DIM = 384


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.array(values)
    return {f"p{q}": round(float(np.percentile(array, q)), 2) for q in (50, 95, 99)}


def seed_items(settings: Settings, items: int, shard: bool = True) -> np.ndarray:
    """The catalog in the vector topic (where worker processes read it) and, with `shard`, in
    an embedded shard at the settings' Qdrant path with its HNSW built."""
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(items, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    seeded = [
        (ItemPayload(f"i{n}", f"Item {n}", f"c{n % 20}", (), True, "h", 1), vectors[n])
        for n in range(items)
    ]
    publish_item_vectors(settings, seeded, DEFAULT_MODEL_ID)
    if shard:
        name = collection_name(DEFAULT_MODEL_ID, DIM)
        index = QdrantEdgeIndex.open(settings.qdrant_embedded_path / name, name, DIM)
        for start in range(0, items, 2000):
            index.upsert(seeded[start : start + 2000])
        index.optimize()
        index.close()
    return vectors


def seed_users(settings: Settings, users: int, items: int) -> None:
    rng = np.random.default_rng(4)
    start = int(time.time() * 1000) - 3600_000
    producer = Producer(kafka_config(settings) | {"linger.ms": 20})
    for u in range(users):
        for n in range(20):
            event = InteractionEvent(
                f"seed-{u}-{n}", f"u{u}", f"i{rng.integers(items)}", "click", start + n * 1000
            )
            producer.produce(
                settings.topic_interactions, event.to_json(), key=event.user_id.encode()
            )
        producer.poll(0)
    producer.flush()


def wait_applied(settings: Settings, count: int) -> None:
    while (
        metric_total(
            settings.metrics_port, "recstream_interactions_events_total", outcome="applied"
        )
        < count
    ):
        time.sleep(0.5)


def open_loop(
    settings: Settings, rate: int, seconds: float, users: int, cold: str = ""
) -> dict[str, Any]:
    """`cold`: every request is for a new user (no state), answered by the cold-start list:
    "popular" (decayed popularity) or "trending" (velocity)."""
    codec = RequestCodec()
    sent: dict[str, float] = {}
    received: dict[str, tuple[float, str, float]] = {}
    consumer = Consumer(
        kafka_config(settings) | {"group.id": f"bench-{uuid.uuid4().hex}", "fetch.wait.max.ms": 5}
    )
    parts = [
        TopicPartition(settings.topic_responses, p) for p in range(settings.partitions_responses)
    ]
    for part in parts:
        part.offset = consumer.get_watermark_offsets(part, timeout=10)[1]
    consumer.assign(parts)
    total = int(rate * seconds)
    done = threading.Event()

    def collect() -> None:
        while not done.is_set() and len(received) < total:
            for message in poll_available(consumer, 100, 0.05):
                if message.error() is None:
                    response = codec.response(message.value())
                    received[response.request_id] = (
                        time.perf_counter(),
                        response.status,
                        response.timings_ms.get("service", 0.0),
                    )

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    producer = Producer(kafka_config(settings) | {"linger.ms": 0})
    rng = np.random.default_rng(rate)
    began = time.perf_counter()
    for n in range(total):
        due = began + n / rate
        while (wait := due - time.perf_counter()) > 0:
            time.sleep(min(wait, 0.002))
        user = f"{cold}-{uuid.uuid4().hex[:8]}" if cold else f"u{rng.integers(users)}"
        request = RecommendRequest(
            f"r{rate}-{n}",
            10,
            user_id=user,
            reply_to=settings.topic_responses,
            trending=cold == "trending",
        )
        producer.produce(settings.topic_requests, request.to_json(), key=user.encode())
        producer.poll(0)
        sent[request.request_id] = due
    producer.flush()
    deadline = time.perf_counter() + 15
    while len(received) < total and time.perf_counter() < deadline:
        time.sleep(0.05)
    done.set()
    reader.join(2)
    consumer.close()
    ok = {k: v for k, v in received.items() if v[1] == "ok"}
    return {
        "rate_per_s": rate,
        "sent": total,
        "answered": len(received),
        "statuses": {
            s: sum(1 for v in received.values() if v[1] == s)
            for s in {v[1] for v in received.values()}
        },
        "end_to_end_ms": percentiles([(v[0] - sent[k]) * 1000 for k, v in ok.items()]),
        "service_ms": percentiles([v[2] for v in ok.values()]),
    }


def publish_burst(settings: Settings, events: int, users: int, items: int) -> None:
    """A backlog of interaction events (Zipf over the bench's users and items) for the worker
    to apply while requests keep coming."""
    rng = np.random.default_rng(6)
    user_ids = np.minimum(rng.zipf(1.1, size=events), users) - 1
    item_ids = rng.integers(items, size=events)
    start = int(time.time() * 1000) - 600_000
    producer = Producer(kafka_config(settings) | {"linger.ms": 20})
    for n in range(events):
        user = f"u{user_ids[n]}"
        event = InteractionEvent(f"burst-{n}", user, f"i{item_ids[n]}", "view", start + n)
        send_waiting(producer, settings.topic_interactions, event.to_json(), user.encode())
    producer.flush()


def while_ingesting(
    settings: Settings, burst: int, rate: int, seconds: float, users: int, items: int
) -> dict[str, Any]:
    """The open loop at `rate` right after a backlog of `burst` events was published: the
    worker's interaction thread applies it flat out in the same process while queries are
    answered (one process for all roles in embedded mode)."""
    applied = "recstream_interactions_events_total"
    before = metric_total(settings.metrics_port, applied, outcome="applied")
    began = time.perf_counter()  # the worker starts on the backlog while it is published
    publish_burst(settings, burst, users, items)
    load = open_loop(settings, rate, seconds, users)
    during = metric_total(settings.metrics_port, applied, outcome="applied") - before
    return load | {
        "burst_events": burst,
        "applied_during_s": round(time.perf_counter() - began, 1),
        "applied_during": int(during),
    }


def freshness(settings: Settings, samples: int, items: int) -> dict[str, float]:
    results = []
    with RecClient(settings, timeout_s=10) as client:
        for n in range(samples):
            user = f"fresh{n}"
            before = [i.item_id for i in client.recommend(user, 10).items]
            item = f"i{(n * 7919) % items}"
            published = time.perf_counter()
            client.track(
                InteractionEvent(
                    f"fresh-{uuid.uuid4().hex}", user, item, "purchase", int(time.time() * 1000)
                )
            )
            client.flush()
            while time.perf_counter() - published < 10:
                after = [i.item_id for i in client.recommend(user, 10).items]
                if after != before:
                    results.append((time.perf_counter() - published) * 1000)
                    break
                time.sleep(0.02)
    return percentiles(results) | {"samples": len(results)}


def _brute_force_us(vectors: np.ndarray, queries: int = 200) -> float:
    rng = np.random.default_rng(5)
    timings = []
    for _ in range(queries):
        q = rng.normal(size=DIM).astype(np.float32)
        started = time.perf_counter()
        scores = vectors @ q
        top = np.argpartition(-scores, 40)[:40]
        top[np.argsort(-scores[top])]
        timings.append((time.perf_counter() - started) * 1e6)
    return float(np.percentile(timings, 50))


def bench_catalog(
    base: Settings, items: int, users: int, rates: list[int], seconds: float, burst: int
) -> dict[str, Any]:
    tag = f"serve{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        settings = base.isolated(
            tag,
            qdrant_path=Path(tmp) / "qdrant",
            metrics_port=29600 + (items % 97),
            embed_threads=1,
        )
        specs = topics.planned_topics(settings)
        topics.ensure_topics(settings, specs)
        seeded = time.perf_counter()
        vectors = seed_items(settings, items)
        seed_s = time.perf_counter() - seeded
        seed_users(settings, users, items)
        worker = start_worker(settings, Path(tmp) / "worker.log", "interactions,query")
        try:
            wait_applied(settings, users * 20)
            with RecClient(settings, timeout_s=60) as client:
                client.recommend("warm-up", 10)
            loads = [open_loop(settings, rate, seconds, users) for rate in rates]
            cold = [
                open_loop(settings, rates[0], seconds, users, kind) | {"cold": kind}
                for _ in range(2)
                for kind in ("popular", "trending")
            ]
            fresh = freshness(settings, 30, items)
            ingesting = while_ingesting(settings, burst, rates[0], seconds, users, items)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
            topics.delete_topics(settings, [s.name for s in specs])
            store = redis_session_store(settings)
            store.delete_namespace()
            store.close()
        return {
            "items": items,
            "users": users,
            "index_build_s": round(seed_s, 1),
            "load": loads,
            "cold_start_popular_vs_trending": cold,
            "freshness_ms": fresh,
            "load_while_ingesting": ingesting,
            "brute_force_numpy_top40_p50_us": round(_brute_force_us(vectors), 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rates", type=int, nargs="+", default=[50, 200, 500])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--burst",
        type=int,
        default=300_000,
        help="interaction events published before the last load, at the first rate",
    )
    args = parser.parse_args()
    settings = load_settings()
    result = {
        "bench": "serve",
        "machine": platform.node(),
        "cpus": os.cpu_count(),
        "catalogs": [
            bench_catalog(settings, n, args.users, args.rates, args.seconds, args.burst)
            for n in args.items
        ],
    }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
