"""Topology benchmark (a benchmark, not a test: it asserts nothing).

Serving while ingesting, in the same run for two topologies on the same machine:
- one process: `recstream worker --roles interactions,query` (the interaction thread and the
  query worker share an interpreter: how recstream ran before #18);
- one process per role: `--roles interactions` and `--roles query` (its own shard, read from the
  vector topic), as infra/Procfile runs them.
For each: open-loop requests at 50/s for 10 s idle, then the same while a backlog of 300k
interaction events is applied (query latency, answers by status, ingest rate over the backlog);
freshness (a purchase published, the user asked every 20 ms until the list changes) idle and
under a steady 5k events/s (published from the bench process: on 2 cores it shares them). The
per-role topology runs twice: as is, and with the ingest process at a lower CPU priority (nice
10), since on a machine with no free core the two processes compete for the same CPU. Then, per
role only and once ingest is idle: open-loop capacity with one query replica and with two. Then
replica catch-up (time to ready and memory, from an empty shard and again from its
checkpoint) for 10k and 100k items, the interaction processor's float16 item-vector copy's
memory for 100k and 1M items, and a pipeline-version switch on the MovieLens logs `make demo`
left: a new version's catch-up and the switch (the same model: the time is the rebuild's).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Producer
from serve import freshness, open_loop, publish_burst, seed_items, seed_users
from workers import start_worker

from recstream.core.settings import Settings, load_settings
from recstream.infra import topics
from recstream.infra.clients import kafka_config
from recstream.infra.stores.registry import redis_session_store
from recstream.metrics_probe import metric_total
from recstream.schemas.events import InteractionEvent

APPLIED = "recstream_interactions_events_total"
STEADY_RATE = 5_000  # events/s published while freshness is measured under ingest


class Process:
    """A worker process with its own metrics port (and shard folder)."""

    def __init__(
        self, settings: Settings, folder: Path, name: str, roles: str, port: int, nice: int = 0
    ) -> None:
        self.settings = settings.model_copy(
            update={"metrics_port": port, "qdrant_path": folder / f"shard-{name}"}
        )
        self.name = name
        self.process = start_worker(self.settings, folder / f"{name}.log", roles, nice)

    @property
    def port(self) -> int:
        return self.settings.metrics_port

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                return True
        except (urllib.error.HTTPError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 900) -> float:
        started = time.perf_counter()
        while not self.ready():
            if self.process.poll() is not None or time.perf_counter() - started > timeout_s:
                raise RuntimeError(f"{self.name} did not get ready")
            time.sleep(0.1)
        return time.perf_counter() - started

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        return 0.0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


@contextmanager
def deployment(base: Settings, folder: Path, items: int, users: int) -> Iterator[Settings]:
    """Topics, a catalog (in the vector topic and a seed shard) and users' histories of its own."""
    settings = base.isolated(
        f"topo{uuid.uuid4().hex[:8]}", qdrant_path=folder / "seed", embed_threads=1
    )
    specs = topics.planned_topics(settings)
    topics.ensure_topics(settings, specs)
    try:
        seed_items(settings, items, shard=False)  # each process reads the topic
        seed_users(settings, users, items)
        yield settings
    finally:
        topics.delete_topics(settings, [s.name for s in specs])
        store = redis_session_store(settings)
        store.delete_namespace()
        store.close()


def wait_applied(port: int, count: float) -> None:
    while metric_total(port, APPLIED, outcome="applied") < count:
        time.sleep(0.2)


def steady_stream(settings: Settings, rate: int, stop: threading.Event, items: int) -> None:
    """Interaction events at `rate` a second for other users, until stopped."""
    producer = Producer(kafka_config(settings) | {"linger.ms": 5})
    rng = np.random.default_rng(9)
    sent = 0
    began = time.perf_counter()
    while not stop.is_set():
        due = began + sent / rate
        if (wait := due - time.perf_counter()) > 0:
            time.sleep(wait)
        user = f"steady{rng.integers(5000)}"
        event = InteractionEvent(
            f"st-{sent}", user, f"i{rng.integers(items)}", "view", int(time.time() * 1000)
        )
        producer.produce(settings.topic_interactions, event.to_json(), key=user.encode())
        producer.poll(0)
        sent += 1
    producer.flush()


def serving_while_ingesting(
    settings: Settings, ingest_port: int, rate: int, seconds: float, burst: int, items: int
) -> dict[str, Any]:
    users = 1000
    idle = open_loop(settings, rate, seconds, users)
    fresh_idle = freshness(settings, 30, items)
    before = metric_total(ingest_port, APPLIED, outcome="applied")
    began = time.perf_counter()
    publish_burst(settings, burst, users, items)
    loaded = open_loop(settings, rate, seconds, users)
    wait_applied(ingest_port, before + burst)
    ingest_s = time.perf_counter() - began
    stop = threading.Event()
    stream = threading.Thread(target=steady_stream, args=(settings, STEADY_RATE, stop, items))
    stream.start()
    try:
        fresh_loaded = freshness(settings, 30, items)
    finally:
        stop.set()
        stream.join()
    return {
        "idle": idle,
        "while_ingesting": loaded,
        "ingest_events_per_s": round(burst / ingest_s),
        "freshness_idle_ms": fresh_idle,
        "freshness_under_steady_ingest_ms": fresh_loaded,
    }


def one_process(base: Settings, args: argparse.Namespace, port: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, deployment(base, Path(tmp), args.items, 1000) as s:
        both = Process(s, Path(tmp), "both", "interactions,query", port)
        try:
            both.wait_ready()
            wait_applied(port, 1000 * 20)
            return serving_while_ingesting(s, port, 50, args.seconds, args.burst, args.items)
        finally:
            both.stop()


def wait_idle(port: int) -> None:
    """Until the interaction processor has nothing left to apply (its lag 0, its count still)."""
    last = -1.0
    while True:
        applied = metric_total(port, APPLIED, outcome="applied")
        lag = metric_total(port, "recstream_consumer_lag_records", role="interactions")
        if applied == last and lag == 0:
            return
        last = applied
        time.sleep(6)  # librdkafka reports lag every 5 s


def per_role(base: Settings, args: argparse.Namespace, port: int, nice: int = 0) -> dict[str, Any]:
    """Serving while ingesting with each role in its own process (the ingest one at CPU
    priority `nice`), then idle capacity with one query replica and with two."""
    with tempfile.TemporaryDirectory() as tmp, deployment(base, Path(tmp), args.items, 1000) as s:
        ingest = Process(s, Path(tmp), "interactions", "interactions", port, nice)
        query = Process(s, Path(tmp), "query", "query", port + 1)
        second: Process | None = None
        try:
            ingest.wait_ready()
            query.wait_ready()
            wait_applied(port, 1000 * 20)
            result = serving_while_ingesting(s, port, 50, args.seconds, args.burst, args.items)
            wait_idle(port)
            one = [open_loop(s, rate, args.seconds, 1000) for rate in args.capacity_rates]
            second = Process(s, Path(tmp), "query2", "query", port + 2)
            second.wait_ready()
            two = [open_loop(s, rate, args.seconds, 1000) for rate in args.capacity_rates]
            return result | {"capacity_one_replica": one, "capacity_two_replicas": two}
        finally:
            for process in (second, query, ingest):
                if process is not None:
                    process.stop()


def catch_up(base: Settings, items: int, port: int) -> dict[str, Any]:
    """A query replica from an empty shard, then restarted from its checkpoint."""
    with tempfile.TemporaryDirectory() as tmp, deployment(base, Path(tmp), items, 10) as s:
        first = Process(s, Path(tmp), "replica", "query", port)
        try:
            empty_s = first.wait_ready()
            rss = first.rss_mib()
        finally:
            first.stop()
        again = Process(s, Path(tmp), "replica", "query", port)
        try:
            checkpoint_s = again.wait_ready()
        finally:
            again.stop()
    return {
        "items": items,
        "ready_from_empty_s": round(empty_s, 1),
        "ready_from_checkpoint_s": round(checkpoint_s, 1),
        "rss_mib": rss,
    }


def model_switch(base: Settings, port: int) -> dict[str, Any]:
    """A new pipeline version built beside the live one from the logs `make demo` left (the
    MovieLens catalog and ratings): seconds until it has caught up and is ready, and the switch
    (compare 200 users, move the pointer); then back, and the new version dropped."""
    from recstream import versions

    status = {row.info.version: row for row in versions.status(base)}
    if "" not in status:
        return {"skipped": "no live pipeline: run make demo first"}
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        new = base.model_copy(update={"pipeline_version": "bench"})
        worker = Process(new, Path(tmp), "bench", "catalog,interactions,query", port)
        try:
            worker.wait_ready()
            while True:
                row = {r.info.version: r for r in versions.status(base)}.get("bench")
                if row is not None and row.catalog_lag == 0 and row.interactions_lag == 0:
                    break
                time.sleep(1)
            caught_up_s = time.perf_counter() - began
            started = time.perf_counter()
            live, bench = status[""].info, row.info
            comparison = versions.compare(base, live, bench, 200)
            previous = versions.switch(base, "bench")
            switch_s = time.perf_counter() - started
            versions.switch(base, previous)
        finally:
            worker.stop()
        versions.drop(base, "bench")
    return {
        "catch_up_s": round(caught_up_s, 1),
        "compare_and_switch_s": round(switch_s, 1),
        "overlap_at_10": round(comparison.overlap_at_10, 3),
        "differing_lists": comparison.differing_lists,
        "users": comparison.users,
    }


COPY_MEMORY = """
import resource, sys, numpy as np
from recstream.core.index import ItemPayload
from recstream.infra.stores.item_vectors import ItemVectorCopy
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
items = int(sys.argv[1])
copy = ItemVectorCopy("m", 384)
before = rss()
rng = np.random.default_rng(1)
for start in range(0, items, 10000):
    block = rng.normal(size=(min(10000, items - start), 384)).astype(np.float32)
    copy.upsert([(ItemPayload(f"i{start + n}", "", f"c{n % 20}", (), True, "h", 1), v)
                 for n, v in enumerate(block)])
print(round(rss() - before, 1), round(copy.nbytes() / 2**20, 1))
"""


def copy_memory(items: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", COPY_MEMORY, str(items)], capture_output=True, text=True, check=True
    )
    grown, matrix = out.stdout.split()
    return {"items": items, "rss_growth_mib": float(grown), "matrix_mib": float(matrix)}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4))
    labels, p50, p99 = [], [], []
    names = {"one_process": "1 process", "per_role": "per role", "per_role_ingest_niced": "nice"}
    for name, short in names.items():
        for phase, when in (("idle", "idle"), ("while_ingesting", "ingest")):
            e2e = result[name][phase]["end_to_end_ms"]
            labels.append(f"{short}\n{when}")
            p50.append(e2e.get("p50", 0))
            p99.append(e2e.get("p99", 0))
    x = np.arange(len(labels))
    left.bar(x - 0.2, p50, 0.4, label="p50")
    left.bar(x + 0.2, p99, 0.4, label="p99")
    left.set_xticks(x, labels, fontsize=6)
    left.set_yscale("log")
    left.set_ylabel("end-to-end ms (log)")
    left.set_title("queries at 50/s, idle and while 300k events are applied", fontsize=8)
    left.legend(fontsize=7)
    sizes = [c["items"] for c in result["catch_up"]]
    empty = [c["ready_from_empty_s"] for c in result["catch_up"]]
    resumed = [c["ready_from_checkpoint_s"] for c in result["catch_up"]]
    x = np.arange(len(sizes))
    right.bar(x - 0.2, empty, 0.4, label="from an empty shard")
    right.bar(x + 0.2, resumed, 0.4, label="from its checkpoint")
    right.set_xticks(x, [f"{n:,} items" for n in sizes], fontsize=7)
    right.set_ylabel("seconds to ready")
    right.set_title("a query replica's start (model load included)", fontsize=8)
    right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--burst", type=int, default=300_000)
    parser.add_argument("--capacity-rates", type=int, nargs="+", default=[200, 500, 1000])
    parser.add_argument("--catch-up-items", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--copy-items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--plot", type=Path, help="write the figure here")
    parser.add_argument("--replot", type=Path, help="only plot this earlier run's JSON output")
    args = parser.parse_args()
    if args.replot:
        plot(orjson.loads(args.replot.read_bytes()), args.plot)
        return
    base = load_settings()
    port = 29700
    result = {
        "bench": "topology",
        "machine": platform.node(),
        "cpus": os.cpu_count(),
        "one_process": one_process(base, args, port),
        "per_role": per_role(base, args, port + 10),
        "per_role_ingest_niced": per_role(base, args, port + 40, nice=10),
        "catch_up": [catch_up(base, n, port + 20) for n in args.catch_up_items],
        "item_vector_copy": [copy_memory(n) for n in args.copy_items],
        "model_switch_movielens": model_switch(base, port + 30),
    }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
