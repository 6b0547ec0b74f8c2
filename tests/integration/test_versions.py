"""Versioned pipelines: a second version with another embedding model built beside the live one
from the same logs, compared, switched to under steady request load, and the old one dropped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from recstream.consumers.client import RecClient
from recstream.core.index import collection_name
from recstream.core.settings import Settings
from recstream.infra import topics
from recstream.infra.clients import redis_client
from recstream.schemas.events import CatalogEvent, InteractionEvent
from tests.integration.ingest_helpers import (
    create_topics,
    delete_namespace,
    isolated_settings,
    produce,
)
from tests.integration.worker_process import WorkerProcess

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)
GENRES = ("Comedy", "Drama", "Horror", "Animation")
USERS = [f"u{n}" for n in range(8)]


def _catalog() -> list[tuple[bytes, bytes]]:
    events = [
        CatalogEvent(
            f"c{n}",
            f"m{n}",
            "upsert",
            NOW,
            title=f"A {GENRES[n % 4]} film number {n}",
            category=GENRES[n % 4],
        )
        for n in range(24)
    ]
    return [(e.item_id.encode(), e.to_json()) for e in events]


def _interactions() -> list[tuple[bytes, bytes]]:
    events = [
        InteractionEvent(f"e{u}-{n}", user, f"m{(u + 4 * n) % 24}", "click", NOW + n)
        for u, user in enumerate(USERS)
        for n in range(5)
    ]
    return [(e.user_id.encode(), e.to_json()) for e in events]


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    return subprocess.run(
        [sys.executable, "-m", "recstream.cli", *args],
        env=env | settings.to_environment(),
        capture_output=True,
        text=True,
        timeout=180,
    )


def _next_clicks(round_: int) -> list[tuple[bytes, bytes]]:
    now = int(time.time() * 1000)
    events = [
        InteractionEvent(f"next-{round_}-{user}", user, "m23", "click", now) for user in USERS
    ]
    return [(e.user_id.encode(), e.to_json()) for e in events]


def _cli_in_background(settings: Settings, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    return subprocess.Popen(
        [sys.executable, "-m", "recstream.cli", *args],
        env=env | settings.to_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ready(worker: WorkerProcess, applied: int) -> None:
    worker.wait_for("recstream_interactions_events_total", applied, outcome="applied")
    deadline = time.monotonic() + 120
    while worker.health() != 200:
        assert time.monotonic() < deadline, worker.log_path.read_text()[-3000:]
        time.sleep(0.2)


class _SteadyLoad:
    """Recommendation requests for the users, one after another, until stopped: every answer's
    status and the collection (model) that answered it, in order."""

    def __init__(self, settings: Settings) -> None:
        self.answers: list[tuple[float, str, str]] = []
        self._settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def __enter__(self) -> _SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        with RecClient(self._settings, timeout_s=30) as client:
            n = 0
            while not self._stop.is_set():
                response = client.recommend(USERS[n % len(USERS)], k=5)
                self.answers.append((time.monotonic(), response.status, response.model_version))
                n += 1
                time.sleep(0.05)


def test_a_model_switch_under_steady_load_answers_every_request_and_never_mixes_models(
    infra: Settings, unique: str, tmp_path: Path
) -> None:
    live = isolated_settings(infra, unique, tmp_path, embed_threads=1, collab_refresh_s=0.5)
    model = tmp_path / "minilm-v2"  # the same weights under another model id: a "new model"
    shutil.copytree(live.resolved_model_path, model)
    new = live.model_copy(update={"pipeline_version": "v2", "model_path": model})
    names = create_topics(live)
    produce(live, live.topic_catalog, _catalog())
    produce(live, live.topic_interactions, _interactions())
    old_worker = WorkerProcess(
        live.model_copy(update={"qdrant_path": tmp_path / "old"}),
        tmp_path / "old.log",
        roles="catalog,interactions,query",
    )
    new_worker = WorkerProcess(
        new.model_copy(update={"qdrant_path": tmp_path / "new"}),
        tmp_path / "new.log",
        roles="catalog,interactions,query",
    )
    try:
        _ready(old_worker, len(USERS) * 5)
        _ready(new_worker, len(USERS) * 5)  # built from the same logs, standing by
        listed = _cli(live, "versions")
        assert "(unversioned)" in listed.stdout and "standing by" in listed.stdout, listed
        with _SteadyLoad(live) as load:
            time.sleep(3)
            switching = _cli_in_background(live, "switch", "v2", "--users", "5", "--shadow", "4")
            # While it scores both versions' lists, every user keeps clicking (whenever its
            # shadow period starts on this machine, it sees clicks).
            round_ = 0
            while switching.poll() is None:
                produce(live, live.topic_interactions, _next_clicks(round_))
                round_ += 1
                time.sleep(0.5)
            out, err = switching.communicate(timeout=180)
            assert switching.returncode == 0, out + err
            switched_at = time.monotonic()
            time.sleep(6)
        assert "5 sampled users: overlap@10" in out
        assert "NDCG@10 on the events of the next 4 s (5 users)" in out
        assert "active pipeline version: v2 (was (unversioned))" in out
        old_model = collection_name("all-MiniLM-L6-v2", 384)
        new_model = collection_name("minilm-v2", 384)
        assert load.answers and {status for _, status, _ in load.answers} == {"ok"}
        assert {m for _, _, m in load.answers} == {old_model, new_model}
        # Requests sent once the switch is done belong to the new version alone.
        late = [m for t, _, m in load.answers if t > switched_at + 1]
        assert late and set(late) == {new_model}
        for worker in (old_worker, new_worker):
            assert worker.metric("recstream_query_model_mismatch_total") == 0
    finally:
        assert old_worker.stop() == 0
        assert new_worker.stop() == 0
    dropped = _cli(live, "versions", "--drop", "")
    assert dropped.returncode == 0, dropped.stdout + dropped.stderr
    assert "Redis keys" in dropped.stdout and "topic" in dropped.stdout
    after = _cli(live, "versions")
    assert "(unversioned)" not in after.stdout and "v2" in after.stdout
    topics.delete_topics(live, [n for n in names if n != topics.vector_topic(live)])  # dropped
    topics.delete_topics(new, [topics.vector_topic(new)])
    delete_namespace(new)
    delete_namespace(live)
    client = redis_client(live)
    client.delete(
        f"{live.redis_namespace}:pipelines:active", f"{live.redis_namespace}:pipelines:versions"
    )
    client.close()
