"""The benchmarks' synthetic workload: a catalog of random item vectors in an embedded index,
and interaction events with Zipf-distributed users and items (bench/ingest.py, bench/cluster.py)."""

from __future__ import annotations

import platform
import time
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Producer

from recstream.core.index import ItemPayload, collection_name
from recstream.core.settings import Settings
from recstream.infra.clients import kafka_config
from recstream.infra.embedder import DEFAULT_MODEL_ID
from recstream.infra.stores.qdrant_edge_index import QdrantEdgeIndex
from recstream.produce import send_waiting

DIM = 384
TYPES = np.array(
    ["view", "view", "view", "click", "click", "add_to_cart", "purchase", "like", "dislike", "skip"]
)


def zipf_ids(rng: np.random.Generator, count: int, universe: int, a: float = 1.1) -> np.ndarray:
    ranks = rng.zipf(a, size=count * 2)
    ranks = ranks[ranks <= universe][:count]
    while len(ranks) < count:  # rare: top up with uniform draws
        ranks = np.concatenate([ranks, rng.integers(1, universe + 1, size=count - len(ranks))])
    return ranks - 1


def produce_interactions(settings: Settings, events: int, users: int, items: int) -> float:
    """Zipf users and items, one event type mix, on the interactions topic; the seconds it took."""
    rng = np.random.default_rng(1)
    user_ids = zipf_ids(rng, events, users)
    item_ids = zipf_ids(rng, events, items)
    kinds = TYPES[rng.integers(0, len(TYPES), size=events)]
    start = int(time.time() * 1000) - 10 * 24 * 3600 * 1000
    producer = Producer(kafka_config(settings) | {"linger.ms": 20, "batch.num.messages": 10000})
    began = time.perf_counter()
    for n in range(events):
        user = f"u{user_ids[n]}"
        value = orjson.dumps(
            {
                "schema_version": 1,
                "event_id": f"e{n}",
                "user_id": user,
                "item_id": f"i{item_ids[n]}",
                "event_type": str(kinds[n]),
                "event_time": start + n * 10,
            }
        )
        send_waiting(producer, settings.topic_interactions, value, user.encode())
    producer.flush()
    return time.perf_counter() - began


def item_vectors(items: int) -> np.ndarray:
    """The bench items' unit vectors (random: how vectors were made does not matter here)."""
    vectors = np.random.default_rng(2).normal(size=(items, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def seed_index(settings: Settings, items: int, collab_factors: int = 0) -> QdrantEdgeIndex:
    """The bench catalog in an embedded index under the settings' Qdrant path."""
    name = collection_name(DEFAULT_MODEL_ID, DIM)
    path = settings.qdrant_embedded_path / name
    index = QdrantEdgeIndex.open(path, name, DIM, collab_dimension=collab_factors)
    vectors = item_vectors(items)
    for start in range(0, items, 1000):
        index.upsert(
            [
                (ItemPayload(f"i{n}", f"Item {n}", f"c{n % 20}", (), True, "h", 1), vectors[n])
                for n in range(start, min(items, start + 1000))
            ]
        )
    return index


def print_with_machine(results: dict[str, Any]) -> None:
    """Print the results as one JSON object, with the machine they were measured on."""
    results["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
