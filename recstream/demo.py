"""`recstream demo` (`make demo`): the whole job on MovieLens ml-latest-small.

Starts the roles as separate processes (infra/Procfile under honcho: a catalog processor, an
interaction processor, two query replicas, a trainer), publishes the 9,742 movies as catalog
events and the 100,836 ratings as interaction events in time order, waits until the processes
have applied them, trains the collaborative (ALS) space once, then asks for recommendations for
a few users and for movies like Toy Story, prints them with reasons, and shows every process.
Run twice, it is fast: unchanged movies are not embedded again and replayed ratings are duplicates.

Ratings become event types as recstream/movielens.py says (docs/demo.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from confluent_kafka import Producer
from tqdm import tqdm

from recstream.cli_format import print_response, print_table
from recstream.consumers.client import RecClient
from recstream.core.attributes import AttributeCondition, AttributeType
from recstream.core.errors import RecstreamError
from recstream.core.settings import Settings
from recstream.datasets import movielens_dir
from recstream.infra import topics, topology
from recstream.infra.clients import kafka_config
from recstream.metrics_probe import metric_total
from recstream.movielens import movie_events, rating_events, rows
from recstream.produce import send_waiting
from recstream.schemas.events import CatalogEvent, InteractionEvent

DEMO_USERS = ("1", "414", "599")
STALL_TIMEOUT_S = 180  # model loading and group joins fit well inside this
DEMO_COPIES = {"query": 2}  # of each role (one of the others)
DEMO_FILTER_ATTRIBUTES: dict[str, AttributeType] = {"year": "number"}
CATALOG_DONE = ("embedded", "unchanged", "payload_updated", "stale", "superseded", "dead_lettered")
INTERACTIONS_DONE = ("applied", "duplicate", "too_late", "too_late_guard_cap", "dead_lettered")


def publish(settings: Settings, topic: str, records: list[tuple[bytes, bytes]], label: str) -> None:
    producer = Producer(kafka_config(settings) | {"linger.ms": 20, "enable.idempotence": True})
    for key, value in tqdm(records, desc=f"publish {label}", unit=" ev", mininterval=0.5):
        send_waiting(producer, topic, value, key)
    if producer.flush(60) != 0:
        raise RecstreamError(f"could not publish all {label} events")


def wait_for(
    worker: subprocess.Popen[bytes],  # the worker, or the process manager running the roles
    port: int,
    metric: str,
    outcomes: tuple[str, ...],
    total: int,
    label: str,
    log: Path,
) -> None:
    done = 0.0
    progressed_at = time.monotonic()
    with tqdm(total=total, desc=f"apply {label}", unit=" ev", mininterval=0.5) as bar:
        while done < total:
            if worker.poll() is not None:
                raise RecstreamError(f"the roles exited ({worker.returncode}); see {log}")
            now = sum(metric_total(port, metric, outcome=o) for o in outcomes)
            if now > done:
                bar.update(int(now - done))
                done, progressed_at = now, time.monotonic()
            elif time.monotonic() - progressed_at > STALL_TIMEOUT_S:
                raise RecstreamError(f"no progress on {label} for {STALL_TIMEOUT_S}s; see {log}")
            time.sleep(0.5)


def start_worker(settings: Settings) -> tuple[subprocess.Popen[bytes], Path]:
    log = settings.state_dir.resolve() / "demo-worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    env |= settings.to_environment()  # the worker sees exactly the demo's settings
    with log.open("ab") as handle:
        worker = subprocess.Popen(
            [sys.executable, "-m", "recstream.cli", "worker"],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return worker, log


def _show(settings: Settings, client: RecClient, folder: Path) -> None:
    titles = {f"m{r['movieId']}": r["title"] for r in rows(folder / "movies.csv")}
    for user in DEMO_USERS:
        response = client.recommend(f"u{user}", k=10)
        print(f"\nRecommendations for user {user}:")
        print_response(response)
    response = client.similar("m1", k=10)
    print(f"\nMore like {titles['m1']}:")
    print_response(response)
    user, tag, since = DEMO_USERS[1], "Comedy", 2000
    response = client.recommend(
        f"u{user}", k=5, tags_any=(tag,), attributes=(AttributeCondition("year", gte=since),)
    )
    print(f"\nFor user {user}, comedies from {since} on (filters inside the index):")
    print_response(response)
    processes = [r.row() for r in topology.report(settings)]
    print_table("\nprocesses", ["process", "metrics port", "state", "lag"], processes)
    print(f"(their log: {settings.state_dir.resolve() / 'demo-roles.log'})")


def feed_worker(
    settings: Settings,
    worker: subprocess.Popen[bytes],
    log: Path,
    catalog: Sequence[CatalogEvent],
    interactions: Sequence[InteractionEvent],
    labels: tuple[str, str] = ("items", "events"),
    ports: tuple[int, int] | None = None,
) -> None:
    """Publish the catalog, wait until it is processed, then the same for interactions (whose
    items are then embedded; an event before its item would wait for it). `ports`: the metrics
    of the catalog and the interaction processor (by default the one worker's)."""
    catalog_port, interactions_port = ports or (settings.metrics_port, settings.metrics_port)
    records = [(e.item_id.encode(), e.to_json()) for e in catalog]
    publish(settings, settings.topic_catalog, records, labels[0])
    metric = "recstream_catalog_events_total"
    wait_for(worker, catalog_port, metric, CATALOG_DONE, len(catalog), labels[0], log)
    records = [(e.user_id.encode(), e.to_json()) for e in interactions]
    publish(settings, settings.topic_interactions, records, labels[1])
    metric = "recstream_interactions_events_total"
    wait_for(
        worker, interactions_port, metric, INTERACTIONS_DONE, len(interactions), labels[1], log
    )


def _train_collab(settings: Settings) -> None:
    """`recstream train` once, so the lists below blend in the collaborative space."""
    from recstream.train import describe, train

    try:
        print(describe(train(settings, wait_s=60)))
    except RecstreamError as error:
        print(f"collaborative space not trained: {error}")
        return
    time.sleep(settings.collab_refresh_s + 0.5)  # each replica installs the new version


def run_demo(settings: Settings) -> int:
    if not settings.metrics_port:
        raise RecstreamError("the demo watches the roles' metrics: set RECSTREAM_METRICS_PORT")
    # The release year (from each title) is filterable: every role gets this setting.
    filterable = DEMO_FILTER_ATTRIBUTES | settings.filter_attributes
    settings = settings.model_copy(update={"filter_attributes": filterable})
    started = time.monotonic()
    folder = movielens_dir(settings.dataset_dir, settings.state_dir / "datasets")
    print(f"MovieLens from {folder}")
    movies, ratings = movie_events(folder), rating_events(folder)
    topics.ensure_topics(settings, topics.planned_topics(settings))
    log = settings.state_dir.resolve() / "demo-roles.log"
    roles = topology.start(settings, DEMO_COPIES, log)
    try:
        topology.wait_ready(settings, DEMO_COPIES, roles, STALL_TIMEOUT_S)
        ports = (
            topology.role_port(settings, "catalog"),
            topology.role_port(settings, "interactions"),
        )
        feed_worker(settings, roles, log, movies, ratings, ("movies", "ratings"), ports)
        _train_collab(settings)
        with RecClient(settings, timeout_s=30) as client:
            _show(settings, client, folder)
    finally:
        topology.stop(roles)
    print(f"\ndemo took {time.monotonic() - started:.0f}s")
    return 0
