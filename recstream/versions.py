"""`recstream versions` and `recstream switch`: pipeline versions side by side
(docs/architecture.md, "Versioned pipelines").

A version's processes run with RECSTREAM_PIPELINE_VERSION set: their Redis keys, vector topic and
processing groups are the version's own, they replay the retained logs from the start, and their
query workers stand by until the version is active. `versions` shows each version's lag;
`switch` compares the two versions' lists for sampled users, then moves the one pointer readers
follow; `versions --drop` removes a version that is not active.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from recstream.compose import collab_versions, event_decoder, pipeline_versions, query_config
from recstream.consumers.client import new_request_id
from recstream.consumers.recommender import Recommender
from recstream.core.collab import FixedModel, StateCollab
from recstream.core.errors import RecstreamError
from recstream.core.index import collection_name
from recstream.core.settings import Settings
from recstream.evaluation.metrics import ndcg_at
from recstream.infra import topics
from recstream.infra.clients import admin_client, kafka_config
from recstream.infra.stores.memory_index import InMemoryVectorIndex
from recstream.infra.stores.pipelines import PipelineInfo
from recstream.infra.stores.registry import redis_session_store
from recstream.infra.vector_log import read_vector_topic
from recstream.schemas.errors import InvalidMessageError
from recstream.schemas.events import InteractionEvent
from recstream.schemas.requests import RecommendRequest

K = 10


def of_version(settings: Settings, version: str) -> Settings:
    return settings.model_copy(update={"pipeline_version": version})


@dataclass(frozen=True)
class VersionStatus:
    info: PipelineInfo
    active: bool
    catalog_lag: int | None  # None: the group has committed nothing yet
    interactions_lag: int | None

    def as_dict(self) -> dict[str, object]:
        return {
            "version": self.info.version,
            "model": self.info.model,
            "active": self.active,
            "catalog_lag": self.catalog_lag,
            "interactions_lag": self.interactions_lag,
        }

    def row(self) -> list[str]:
        def lag(n: int | None) -> str:
            return "not started" if n is None else str(n)

        return [
            self.info.version or "(unversioned)",
            self.info.model,
            "active" if self.active else "standing by",
            lag(self.catalog_lag),
            lag(self.interactions_lag),
        ]


def status(settings: Settings) -> list[VersionStatus]:
    versions = pipeline_versions(settings)
    active = versions.active()
    return [
        VersionStatus(
            info,
            info.version == active,
            group_lag(settings, of_version(settings, info.version).processing_group, "catalog"),
            group_lag(
                settings,
                of_version(settings, info.version).processing_group + "-interactions",
                "interactions",
            ),
        )
        for info in versions.known()
    ]


def group_lag(settings: Settings, group: str, kind: str) -> int | None:
    """Records of the input topic the group has not committed past (None: nothing committed)."""
    topic = settings.topic_catalog if kind == "catalog" else settings.topic_interactions
    consumer = Consumer(kafka_config(settings) | {"group.id": group, "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        if all(part.offset < 0 for part in committed):
            return None
        behind = 0
        for part in committed:
            _, high = consumer.get_watermark_offsets(part, timeout=10)
            behind += high - max(part.offset, 0)
        return behind
    finally:
        consumer.close()


@dataclass(frozen=True)
class Comparison:
    users: int
    overlap_at_10: float  # mean share of one version's top 10 also in the other's
    differing_lists: int
    coverage_at_10: tuple[float, float]  # share of each version's catalog its lists show
    shadow_s: float = 0.0
    judged_users: int = 0  # sampled users with a positive event in the shadow period
    ndcg_at_10: tuple[float, float] | None = None  # of each version's list on those events

    def describe(self, old: str, new: str) -> str:
        old = old or "(unversioned)"
        text = (
            f"{self.users} sampled users: overlap@10 {self.overlap_at_10:.2f}, "
            f"{self.differing_lists} lists differ; coverage@10 {old} "
            f"{self.coverage_at_10[0]:.3f}, {new} {self.coverage_at_10[1]:.3f}"
        )
        if self.ndcg_at_10 is not None:
            text += (
                f"; NDCG@10 on the events of the next {self.shadow_s:g} s ({self.judged_users} "
                f"users): {old} {self.ndcg_at_10[0]:.3f}, {new} {self.ndcg_at_10[1]:.3f}"
            )
        elif self.shadow_s:
            text += f"; no sampled user had a positive event in the next {self.shadow_s:g} s"
        return text


def compare(
    settings: Settings, old: PipelineInfo, new: PipelineInfo, users: int, shadow_s: float = 0.0
) -> Comparison:
    """Both versions' lists for users sampled from the newest interactions, computed here from
    each version's own state (its vector topic, Redis keys, collaborative version); with
    `shadow_s`, each list's NDCG@10 on the positive events those users send in the next
    shadow_s seconds (events the lists could not have seen)."""
    sample = recent_users(settings, users)
    asked_ms = int(time.time() * 1000)
    first, first_items = lists_of(settings, old, sample)
    second, second_items = lists_of(settings, new, sample)
    overlaps = [len(set(first[u]) & set(second[u])) / K for u in sample]
    shown = (
        len({i for ids in first.values() for i in ids}) / max(1, first_items),
        len({i for ids in second.values() for i in ids}) / max(1, second_items),
    )
    judged, ndcg = 0, None
    if shadow_s > 0:
        time.sleep(shadow_s)
        relevant = positive_items_since(settings, set(sample), asked_ms)
        judged = len(relevant)
        if relevant:
            ndcg = (
                sum(ndcg_at(first[u], items, K) for u, items in relevant.items()) / judged,
                sum(ndcg_at(second[u], items, K) for u, items in relevant.items()) / judged,
            )
    return Comparison(
        len(sample),
        sum(overlaps) / max(1, len(overlaps)),
        sum(first[u] != second[u] for u in sample),
        shown,
        shadow_s,
        judged,
        ndcg,
    )


def positive_items_since(settings: Settings, users: set[str], since_ms: int) -> dict[str, set[str]]:
    """Per user of `users`, the items of their positive events sent since since_ms."""
    topic = settings.topic_interactions
    consumer = Consumer(
        kafka_config(settings) | {"group.id": "shadow", "enable.auto.commit": False}
    )
    decoder = event_decoder(settings)
    found: dict[str, set[str]] = {}
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        starts = consumer.offsets_for_times(
            [TopicPartition(topic, p, since_ms) for p in partitions], timeout=10
        )
        ends = {
            p.partition: consumer.get_watermark_offsets(p, timeout=10)[1]
            for p in starts
            if p.offset >= 0
        }
        consumer.assign([p for p in starts if p.offset >= 0 and p.offset < ends[p.partition]])
        pending = {p for p, end in ends.items() if end > 0}
        while pending:
            messages = consumer.consume(1000, 1.0)
            if not messages:
                break
            for message in messages:
                if (message.offset() or 0) + 1 >= ends.get(message.partition() or 0, 0):
                    pending.discard(message.partition() or 0)
                try:
                    event = decoder.interaction(message.value(), int(time.time() * 1000))
                except InvalidMessageError:
                    continue
                if event.user_id in users and _is_positive(settings, event):
                    found.setdefault(event.user_id, set()).add(event.item_id)
    finally:
        consumer.close()
    return found


def _is_positive(settings: Settings, event: InteractionEvent) -> bool:
    if event.event_type == "rating":
        return (event.value or 0.0) > settings.rating_center
    return settings.event_weights.get(event.event_type, 0.0) > 0


def recent_users(settings: Settings, count: int, tail: int = 5000) -> list[str]:
    """Up to `count` users, sampled among those of the last `tail` interaction records."""
    topic = settings.topic_interactions
    consumer = Consumer(
        kafka_config(settings) | {"group.id": "recent-users", "enable.auto.commit": False}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        per_partition = max(1, tail // max(1, len(partitions)))
        assigned, ends = [], {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                assigned.append(TopicPartition(topic, p, max(low, high - per_partition)))
                ends[p] = high
        consumer.assign(assigned)
        users: set[str] = set()
        while ends:
            messages = consumer.consume(1000, 1.0)
            if not messages:
                break  # nothing more in time
            for message in messages:
                key = message.key()
                if message.error() is None and key:
                    users.add(key.decode())
                if (message.offset() or 0) + 1 >= ends.get(message.partition() or 0, 0):
                    ends.pop(message.partition() or 0, None)
    finally:
        consumer.close()
    return sorted(random.Random(7).sample(sorted(users), min(count, len(users))))


def lists_of(
    settings: Settings, info: PipelineInfo, users: list[str]
) -> tuple[dict[str, list[str]], int]:
    """The version's top 10 per user, and how many items its catalog serves."""
    versioned = of_version(settings, info.version)
    records = read_vector_topic(versioned, topics.vector_topic(versioned, info.model))
    if not records:
        raise RecstreamError(f"version {info.version or '(unversioned)'} has no item vectors yet")
    dimension = len(next(iter(records.values())).vector)
    index = InMemoryVectorIndex(
        collection_name(info.model, dimension), dimension, collab_dimension=settings.collab_factors
    )
    index.upsert([(r.payload, r.vector) for r in records.values()])
    store = redis_session_store(versioned)
    try:
        recommender = Recommender(
            index, store, None, query_config(versioned), collab=_collab(versioned, index)
        )
        lists = {
            user: [
                item.item_id
                for item in recommender.recommend(
                    RecommendRequest(new_request_id(), K, user_id=user)
                ).items
            ]
            for user in users
        }
    finally:
        store.close()
    return lists, index.count()


def _collab(settings: Settings, index: InMemoryVectorIndex) -> StateCollab | None:
    versions = collab_versions(settings)
    active = versions.active()
    if active is None or active.dimension != index.collab_dimension:
        return None
    model = versions.load(active)
    index.write_collab(0, dict(zip(model.items, model.factors, strict=True)))
    model.slot = 0
    return StateCollab(FixedModel(model), settings.collab_min_history)


def switch(settings: Settings, version: str) -> str:
    """Move the pointer; the version it replaces."""
    versions = pipeline_versions(settings)
    if version not in {v.version for v in versions.known()}:
        raise RecstreamError(f"no pipeline version {version!r} has run (recstream versions)")
    return versions.switch(version, lambda: request_ends(settings))


def request_ends(settings: Settings) -> dict[int, int]:
    """Each request partition's end offset now."""
    topic = settings.topic_requests
    consumer = Consumer(kafka_config(settings) | {"group.id": "ends", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def drop(settings: Settings, version: str) -> list[str]:
    """Remove a version that is not active: its Redis keys, vector topic and groups."""
    versions = pipeline_versions(settings)
    if version == versions.active():
        raise RecstreamError(f"version {version or '(unversioned)'} is active: switch first")
    known = {v.version: v for v in versions.known()}
    if version not in known:
        raise RecstreamError(f"no pipeline version {version!r} is known")
    versioned = of_version(settings, version)
    store = redis_session_store(versioned)
    try:
        removed = [f"{store.delete_namespace()} Redis keys"]
    finally:
        store.close()
    topic = topics.vector_topic(versioned, known[version].model)
    admin: AdminClient = admin_client(settings)
    for future in admin.delete_topics([topic], operation_timeout=30).values():
        future.result()
    removed.append(f"topic {topic}")
    group = versioned.processing_group
    groups = [group, f"{group}-interactions", f"{group}-replica", f"{group}-query"]
    for name, future in admin.delete_consumer_groups(groups, request_timeout=30).items():
        try:
            future.result()
            removed.append(f"group {name}")
        except Exception as error:  # a group that never committed does not exist
            removed.append(f"group {name} not removed ({error})")
    versions.forget(version)
    return removed
