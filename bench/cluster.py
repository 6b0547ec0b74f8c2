"""One Redis against a local three-node Redis Cluster (a benchmark, not a test: it asserts
nothing). The same interaction events, produced once, are applied by the interaction processor
into each (its own consumer group and keys), then the same requests are answered from each
in this process (the service time the query worker reports). The order alternates
(single, cluster, single, cluster) so a drift of this VM falls on both; results as JSON.
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
from workload import produce_interactions, seed_index

from recstream.compose import interaction_consumer, query_config
from recstream.consumers.recommender import Recommender
from recstream.core.settings import Settings, load_settings
from recstream.infra import topics
from recstream.infra.clients import kafka_config
from recstream.infra.dlq import DeadLetterWriter
from recstream.infra.redis_cluster import LocalCluster
from recstream.infra.stores.qdrant_edge_index import QdrantEdgeIndex
from recstream.infra.stores.registry import open_session_store, redis_session_store
from recstream.schemas.requests import RecommendRequest

CLUSTER_PORTS = (17201, 17202, 17203)


def _ingest(settings: Settings, index: QdrantEdgeIndex, events: int) -> dict[str, Any]:
    """Events/s of the processor over the whole stream (from its first applied batch)."""
    consumer = interaction_consumer(
        settings,
        index,
        redis_session_store(settings),
        DeadLetterWriter(kafka_config(settings)),
    )
    consumed, timed, began = 0, 0, 0.0
    while consumed < events:
        count = consumer.run_once()
        consumed += count
        if began:
            timed += count
        elif count:  # from the first batch on (the group join and that batch not timed)
            began = time.perf_counter()
    elapsed = time.perf_counter() - began
    consumer.close()
    return {"events_per_s": round(timed / elapsed)}


def _serve(settings: Settings, index: QdrantEdgeIndex, users: int, requests: int) -> dict[str, Any]:
    store = open_session_store(settings)
    recommender = Recommender(index, store, None, query_config(settings))
    times = []
    for n in range(requests):
        request = RecommendRequest(uuid.uuid4().hex, 10, f"u{n % users}")
        began = time.perf_counter()
        recommender.recommend(request)
        times.append((time.perf_counter() - began) * 1000)
    store.close()
    p50, p95, p99 = (round(float(p), 2) for p in np.percentile(times, [50, 95, 99]))
    return {"service_ms": {"p50": p50, "p95": p95, "p99": p99}}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    base = load_settings()
    cluster = LocalCluster(base, CLUSTER_PORTS)
    cluster.start()
    tag = f"bench{uuid.uuid4().hex[:8]}"
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = base.isolated(tag, qdrant_path=Path(tmp))
        specs = topics.planned_topics(settings)
        topics.ensure_topics(settings, specs)
        index = seed_index(settings, args.items)
        produce_interactions(settings, args.events, args.users, args.items)
        try:
            for round_ in range(args.rounds):
                for kind, target in (("single", base), ("cluster", cluster.client_settings())):
                    run = target.isolated(
                        f"{tag}-{kind}-{round_}", qdrant_path=Path(tmp)
                    ).model_copy(update={"topic_interactions": settings.topic_interactions})
                    result = {"redis": kind, "round": round_ + 1}
                    result |= _ingest(run, index, args.events)
                    result |= _serve(run, index, args.users, args.requests)
                    runs.append(result)
                    redis_session_store(run).delete_namespace()
        finally:
            index.close()
            topics.delete_topics(settings, [s.name for s in specs])
            cluster.stop()
    print(
        orjson.dumps(
            {
                "bench": "redis-cluster",
                "machine": platform.node(),
                "cpus": os.cpu_count(),
                "nodes": len(CLUSTER_PORTS),
                "events": args.events,
                "users": args.users,
                "runs": runs,
            },
            option=orjson.OPT_INDENT_2,
        ).decode()
    )


if __name__ == "__main__":
    main()
