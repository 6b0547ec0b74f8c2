"""`recstream eval --live N`: the offline path checked against the real one. N test users' training
events and the items they touch go through the real topics into a real worker (Kafka, Redis,
embedded Qdrant); `recstream train` fits a collaborative version on them, which the worker
installs, when there are enough of them; the recommendations come back through the request topic.
The same events are then replayed offline over the worker's own item vectors (read from its index
once it stopped) and the same collaborative version, and both lists must be the same for every
user."""

from __future__ import annotations

import random
import signal
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from recstream.compose import collab_versions, session_config
from recstream.consumers.client import RecClient
from recstream.core.collab import CollabModel
from recstream.core.errors import RecstreamError
from recstream.core.index import VectorIndex
from recstream.core.ports import Embedder
from recstream.core.settings import Settings
from recstream.demo import feed_worker, start_worker
from recstream.evaluation.data import EvalDataset
from recstream.evaluation.harness import shipped
from recstream.evaluation.split import Split
from recstream.evaluation.system import recommend_all, replay
from recstream.infra import topics
from recstream.infra.stores.memory_index import InMemoryVectorIndex
from recstream.infra.stores.memory_store import InMemorySessionStore
from recstream.infra.stores.registry import open_vector_index, redis_session_store
from recstream.schemas.events import CatalogEvent, InteractionEvent

K = 10


@dataclass(frozen=True)
class LiveCheck:
    users: list[str]
    live: dict[str, list[str]]
    offline: dict[str, list[str]]
    collab_version: int | None = None  # the collaborative version both sides blended in

    @property
    def mismatched(self) -> list[str]:
        return [u for u in self.users if self.live[u] != self.offline[u]]

    def summary(self) -> dict[str, object]:
        return {
            "users": len(self.users),
            "same_lists": len(self.users) - len(self.mismatched),
            "collab_version": self.collab_version,
            "mismatched": {u: [self.live[u], self.offline[u]] for u in self.mismatched},
        }


def sample(
    dataset: EvalDataset, split: Split, users: int, seed: int = 11
) -> tuple[list[str], list[InteractionEvent], list[CatalogEvent]]:
    """`users` test users (seeded), their training events and the items those touch."""
    chosen = sorted(
        random.Random(seed).sample(sorted(split.relevant), min(users, len(split.relevant)))
    )
    wanted = set(chosen)
    events = [e for e in split.train if e.user_id in wanted]
    touched = {e.item_id for e in events} | {i for u in chosen for i in split.relevant[u]}
    items = [c for c in dataset.catalog(split.visible) if c.item_id in touched]
    return chosen, events, items


def check_live(
    base: Settings,
    dataset: EvalDataset,
    split: Split,
    users: int,
    embedder: Embedder,
    timeout_s: float = 30.0,
) -> LiveCheck:
    chosen, events, items = sample(dataset, split, users)
    prefix = f"eval-live-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="recstream-live-") as tmp:
        settings = base.isolated(prefix, qdrant_path=Path(tmp) / "qdrant", state_dir=Path(tmp))
        names = [spec.name for spec in topics.planned_topics(settings)]
        topics.ensure_topics(settings, topics.planned_topics(settings))
        try:
            live = _run_live(settings, chosen, events, items, timeout_s)
            collab = _installed_collab(settings)
            served = open_vector_index(settings, embedder.model_id, embedder.dimension)
            try:
                item_ids = [c.item_id for c in items]
                offline = _run_offline(settings, served, chosen, events, item_ids, collab)
            finally:
                served.close()
        finally:
            topics.delete_topics(settings, names)
            store = redis_session_store(settings)
            store.delete_namespace()
            store.close()
    return LiveCheck(chosen, live, offline, collab.version if collab else None)


def _train_live(settings: Settings) -> None:
    """A collaborative version on the sample, installed by the live worker, when the sample is
    big enough to train on (too little data is refused: then neither side blends)."""
    from recstream.train import train

    try:
        report = train(settings, wait_s=60)
    except RecstreamError:
        return
    if report.status != "installed":
        raise RecstreamError(f"the live worker did not install collab version: {report.status}")
    time.sleep(settings.collab_refresh_s + 0.5)  # the worker's readers switch to it


def _installed_collab(settings: Settings) -> CollabModel | None:
    versions = collab_versions(settings)
    active = versions.active()
    return None if active is None else versions.load(active)


def _run_live(
    settings: Settings,
    users: Sequence[str],
    events: Sequence[InteractionEvent],
    items: Sequence[CatalogEvent],
    timeout_s: float,
) -> dict[str, list[str]]:
    if not settings.metrics_port:
        raise RecstreamError("--live watches the worker's metrics: set RECSTREAM_METRICS_PORT")
    worker, log = start_worker(settings)
    try:
        feed_worker(settings, worker, log, items, events)
        _train_live(settings)
        with RecClient(settings, timeout_s=timeout_s) as client:  # the worker's own defaults
            return {u: [i.item_id for i in client.recommend(u, K).items] for u in users}
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)


def _run_offline(
    settings: Settings,
    served: VectorIndex,
    users: Sequence[str],
    events: Sequence[InteractionEvent],
    item_ids: list[str],
    collab: CollabModel | None,
) -> dict[str, list[str]]:
    """The offline path over the item vectors the worker stored (the same state)."""
    index = InMemoryVectorIndex(served.collection, served.dimension)
    records = served.retrieve(item_ids, with_vectors=True)
    index.upsert([(r.payload, r.vector) for r in records.values() if r.vector is not None])
    config = session_config(settings)
    store = InMemorySessionStore.from_settings(settings)
    replay(events, index, store, config)
    return recommend_all(index, store, users, K, shipped(settings).blended, collab)
