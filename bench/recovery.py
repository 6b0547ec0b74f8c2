"""Crash recovery benchmark (a benchmark, not a test: it asserts nothing).

A real `recstream worker --roles interactions` process applies a steady stream of events; it is
SIGKILLed and a new one started at once, as an orchestrator would. Measured: seconds from the
kill to the first event the new process applies (the partitions' downtime), and to its /health
answering 200 (the process started and its services answer). Three group settings, each in the
same run:
- librdkafka's default session timeout (45 s), dynamic membership (recstream before #16);
- a 10 s session timeout, dynamic membership (RECSTREAM_KAFKA_STATIC_MEMBERSHIP=false);
- what recstream ships: a 10 s session timeout and static membership (the worker's instance id
  is `<host name>-<metrics port>`, the same for the restarted process).
With dynamic membership the new member's join waits until the dead member's session expires;
a static member takes its predecessor's place without a rebalance.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Producer
from workers import start_worker

from recstream.core.index import ItemPayload, collection_name
from recstream.core.settings import Settings, load_settings
from recstream.infra import topics
from recstream.infra.clients import kafka_config
from recstream.infra.embedder import DEFAULT_MODEL_ID
from recstream.infra.stores.qdrant_edge_index import QdrantEdgeIndex
from recstream.infra.vector_log import publish_item_vectors
from recstream.metrics_probe import metric_total
from recstream.produce import send_waiting
from recstream.schemas.events import InteractionEvent

DIM = 384
CONFIGS: dict[str, dict[str, Any]] = {
    "45 s session, dynamic (before #16)": {
        "kafka_session_timeout_ms": 45_000,
        "kafka_static_membership": False,
    },
    "10 s session, dynamic": {"kafka_session_timeout_ms": 10_000, "kafka_static_membership": False},
    "10 s session, static membership (shipped)": {},
}


def _seed_items(settings: Settings, items: int = 200) -> None:
    rng = np.random.default_rng(3)
    name = collection_name(DEFAULT_MODEL_ID, DIM)
    index = QdrantEdgeIndex.open(settings.qdrant_embedded_path / name, name, DIM)
    vectors = rng.normal(size=(items, DIM)).astype(np.float32)
    seeded = [
        (ItemPayload(f"i{n}", f"Item {n}", "c", (), True, "h", 1), vectors[n]) for n in range(items)
    ]
    index.upsert(seeded)
    index.close()
    publish_item_vectors(settings, seeded, DEFAULT_MODEL_ID)  # where worker processes read them


def _stream(settings: Settings, rate: int, stop: threading.Event) -> None:
    """Events for 500 users at `rate` a second, with the current time, until stopped."""
    producer = Producer(kafka_config(settings) | {"linger.ms": 20})
    sequence = 0
    while not stop.is_set():
        started = time.monotonic()
        now = int(time.time() * 1000)
        for _ in range(rate // 10):
            user = f"u{sequence % 500}"
            event = InteractionEvent(f"e{sequence}", user, f"i{sequence % 200}", "click", now)
            send_waiting(producer, settings.topic_interactions, event.to_json(), user.encode())
            sequence += 1
        producer.poll(0)
        stop.wait(max(0.0, 0.1 - (time.monotonic() - started)))
    producer.flush(10)


def _applied(settings: Settings) -> float:
    return metric_total(
        settings.metrics_port, "recstream_interactions_events_total", outcome="applied"
    )


def _healthy(settings: Settings) -> bool:
    """/health answers 200: Kafka, Redis and the index answer, the roles run."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{settings.metrics_port}/health") as answer:
            return int(answer.status) == 200
    except OSError:
        return False


def _wait(condition: Any, timeout_s: float = 180.0) -> float:
    """Seconds until condition() holds (polled every 50 ms)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError("condition not met")
        time.sleep(0.05)
    return time.monotonic()


def _one_crash(base: Settings, name: str, changes: dict[str, Any], folder: Path) -> dict[str, Any]:
    prefix = f"benchrec-{uuid.uuid4().hex[:8]}"
    settings = base.isolated(prefix, qdrant_path=folder / prefix / "qdrant", **changes)
    specs = topics.planned_topics(settings)
    topics.ensure_topics(settings, specs)
    _seed_items(settings)
    stop = threading.Event()
    producer = threading.Thread(target=_stream, args=(settings, 2000, stop), daemon=True)
    producer.start()
    first = start_worker(settings, folder / f"{prefix}-first.log", "interactions")
    try:
        _wait(lambda: _applied(settings) > 5000)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed = time.monotonic()
        second = start_worker(settings, folder / f"{prefix}-second.log", "interactions")
        ready = _wait(lambda: _healthy(settings))
        resumed = _wait(lambda: _applied(settings) > 0)
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    finally:
        stop.set()
        producer.join(30)
        if first.poll() is None:
            first.kill()
        topics.delete_topics(settings, [s.name for s in specs])
    return {
        "config": name,
        "downtime_s": round(resumed - killed, 2),
        "process_ready_s": round(ready - killed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--plot", type=Path, help="write a bar chart of the downtimes here")
    args = parser.parse_args()
    base = load_settings()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as folder:
        for _ in range(args.repeats):
            for name, changes in CONFIGS.items():
                results.append(_one_crash(base, name, dict(changes), Path(folder)))
                print(orjson.dumps(results[-1]).decode(), flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(orjson.dumps({"machine": machine, "results": results}).decode())
    if args.plot:
        _plot(results, args.plot)


def _plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(CONFIGS)
    downtime = [[r["downtime_s"] for r in results if r["config"] == n] for n in names]
    start = [[r["process_ready_s"] for r in results if r["config"] == n] for n in names]
    figure, axes = plt.subplots(figsize=(7, 3))
    rows = range(len(names))
    axes.barh(rows, [max(d) for d in downtime], color="#c44", label="kill to first event applied")
    axes.barh(
        rows, [max(s) for s in start], color="#888", label="of which until the new process is ready"
    )
    axes.set_yticks(list(rows), names)
    axes.invert_yaxis()
    axes.set_xlabel("seconds (worst of the repeats)")
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
