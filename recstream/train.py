"""`recstream train`: the collaborative space's training job (docs/collab.md).

Reads the retained interactions topic from its start to where it ends now, builds each user's
history (event weights, decayed by age), fits implicit ALS, and stages the item factors as a new
version. With embedded replicas the switch of the active pointer is the install (each replica
then writes the version into its own free slot before serving it); with a Qdrant server, a
worker writes the server's free slot and then switches readers to it atomically.
Too little data is refused with a clear message and the current version stays.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from recstream.compose import als_params, collab_versions, event_decoder
from recstream.core.collab import VersionInfo
from recstream.core.errors import RecstreamError
from recstream.core.index import VectorIndex
from recstream.core.settings import Settings
from recstream.infra.clients import kafka_config
from recstream.infra.stores.collab_store import CollabVersions, wait_installed
from recstream.schemas.errors import InvalidMessageError
from recstream.schemas.events import InteractionEvent
from recstream.streams.collab import fit_als, neighbour_drift, user_histories
from recstream.streams.train_metrics import COLLAB_DRIFT


@dataclass(frozen=True)
class TrainReport:
    version: VersionInfo  # as installed, or as staged (slot None) when no worker installed it yet
    events: int
    invalid: int
    users: int
    items: int
    read_seconds: float
    fit_seconds: float
    publish_seconds: float  # staging, and installing where this run installed or waited
    status: str  # installed, staged (a worker will install it), or why it was not installed


def read_interactions(settings: Settings) -> tuple[list[InteractionEvent], int]:
    """Every retained interaction event up to the end of each partition as it is now (a replayed
    event, same event id, counted once, as the processor's guards count it), and how many
    records did not decode (the processor dead-lettered those already)."""
    consumer = Consumer(
        kafka_config(settings)
        | {"group.id": f"recstream-train-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
    )
    try:
        metadata = consumer.list_topics(settings.topic_interactions, timeout=10)
        topic = metadata.topics.get(settings.topic_interactions)
        if topic is None or topic.error is not None:
            raise RecstreamError(f"no topic {settings.topic_interactions!r} to train from")
        ends = {}
        for partition in topic.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(settings.topic_interactions, partition), timeout=10
            )
            if high > low:
                ends[partition] = high
        consumer.assign(
            [TopicPartition(settings.topic_interactions, p, OFFSET_BEGINNING) for p in ends]
        )
        return _read_until(consumer, ends, settings)
    finally:
        consumer.close()


def _read_until(
    consumer: Consumer, ends: dict[int, int], settings: Settings
) -> tuple[list[InteractionEvent], int]:
    decoder = event_decoder(settings)
    events: list[InteractionEvent] = []
    seen_ids: set[str] = set()
    invalid = 0
    now = int(time.time() * 1000)
    idle_since = time.monotonic()
    while ends:
        batch = consumer.consume(num_messages=10_000, timeout=1.0)
        if not batch and time.monotonic() - idle_since > 30:
            raise RecstreamError("the interactions topic stopped answering while training read it")
        for message in batch:
            if message.error() is not None:
                continue
            idle_since = time.monotonic()
            partition, offset = message.partition(), message.offset()
            if partition not in ends or offset is None or partition is None:
                continue
            try:
                event = decoder.interaction(message.value() or b"", now)
                if event.event_id not in seen_ids:
                    seen_ids.add(event.event_id)
                    events.append(event)
            except InvalidMessageError:
                invalid += 1
            if offset + 1 >= ends[partition]:
                del ends[partition]
    events.sort(key=lambda e: e.event_time)
    return events, invalid


def train(settings: Settings, index: VectorIndex | None = None, wait_s: float = 0) -> TrainReport:
    """Fit and stage a new version. With `index` (a worker's own), install it now; else wait up
    to wait_s for a running worker to install it."""
    started = time.monotonic()
    events, invalid = read_interactions(settings)
    read_s = time.monotonic() - started
    newest = events[-1].event_time if events else 0
    half_life = settings.collab_half_life_ms or None
    histories = user_histories(events, settings.event_weights, half_life, newest)
    items = sorted({i for h in histories.values() for i in h})
    versions = collab_versions(settings)
    previous = versions.active()
    _check_enough(settings, len(events), len(histories), len(items), previous)
    params = als_params(settings)
    fit_started = time.monotonic()
    model = fit_als(histories, items, params, version=0)
    fit_s = time.monotonic() - fit_started
    publish_started = time.monotonic()
    drift = None
    if previous is not None:
        try:
            drift = neighbour_drift(versions.load(previous), model)
        except RecstreamError:
            drift = None  # an unreadable previous version: nothing to compare with
    info = versions.stage(model, drift)
    installed = None
    if index is not None or not settings.qdrant_url:
        # Embedded: every replica writes its own slots, so switching the pointer is the install.
        installed = versions.install_staged(index)
    if installed is None and wait_s > 0:
        installed = wait_installed(versions, info.version, wait_s)
    info = installed or info
    status = _status(info, versions.staged())
    if drift is not None:
        COLLAB_DRIFT.set(drift)
    report = TrainReport(
        info,
        len(events),
        invalid,
        len(histories),
        len(items),
        round(read_s, 2),
        round(fit_s, 2),
        round(time.monotonic() - publish_started, 2),
        status,
    )
    _write_report(settings, report)
    return report


def _status(info: VersionInfo, staged: VersionInfo | None) -> str:
    if info.installed_ms is not None:  # (embedded replicas each write their own slot then)
        return "installed"
    if staged is not None and staged.version == info.version:
        return "staged"
    return "not installed: a worker rejected it or a newer version replaced it"


def _check_enough(
    settings: Settings, events: int, users: int, items: int, current: VersionInfo | None
) -> None:
    keeping = f"version {current.version} stays" if current else "no version is published"
    for what, have, need in (
        ("events", events, settings.collab_min_events),
        ("users with positive history", users, settings.collab_min_users),
        ("items", items, settings.collab_min_items),
    ):
        if have < need:
            raise RecstreamError(
                f"too little data to train: {have} {what}, need {need} "
                f"(RECSTREAM_COLLAB_MIN_*); {keeping}"
            )


def _write_report(settings: Settings, report: TrainReport) -> None:
    folder = settings.state_dir / "collab"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"train-v{report.version.version}.json"
    path.write_bytes(orjson.dumps(asdict(report), option=orjson.OPT_INDENT_2))


def describe(report: TrainReport) -> str:
    v = report.version
    drift = "n/a (first version)" if v.drift is None else f"{v.drift:.3f}"
    if report.status == "installed" and v.slot is None:
        where = (
            f"active ({v.items} items); each query replica installs it in its own index within "
            "RECSTREAM_COLLAB_REFRESH_S"
        )
    elif report.status == "installed":
        where = (
            f"installed in slot {v.slot} ({v.items} items); readers switch within "
            "RECSTREAM_COLLAB_REFRESH_S"
        )
    elif report.status == "staged":
        where = "staged, not installed yet: a running worker installs it"
    else:
        where = f"{report.status} (the worker's log says which)"
    return (
        f"collab version {v.version}: {report.events} events ({report.invalid} invalid), "
        f"{report.users} users, {report.items} items, {v.dimension} factors; read "
        f"{report.read_seconds}s, fit {report.fit_seconds}s, publish {report.publish_seconds}s; "
        f"neighbour drift {drift}; {where}"
    )


def describe_versions(versions: CollabVersions) -> str:
    """What `recstream train --status` prints: the version readers use and any staged one."""
    lines = []
    for label, info in (("active", versions.active()), ("staged", versions.staged())):
        if info is None:
            lines.append(f"{label}: none")
            continue
        trained = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(info.trained_ms / 1000))
        drift = "n/a" if info.drift is None else f"{info.drift:.3f}"
        where = "" if info.slot is None else f", slot {info.slot}"
        lines.append(
            f"{label}: version {info.version}{where}, {info.items} items, {info.dimension} "
            f"factors, trained {trained} UTC, neighbour drift {drift}"
        )
    return "\n".join(lines)
