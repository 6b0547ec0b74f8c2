"""Catalog processor: catalog events become item vectors and payloads, produced to the vector
topic and kept in the processor's own index.

`plan_catalog_batch` is pure (events + what is stored -> what to do); `CatalogProcessor` does the
I/O around it: decode, dead-letter, look up stored items, embed only what changed, write.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from recstream.core.attributes import AttributeType, typed_attributes
from recstream.core.index import ItemPayload, ItemRecord, Vector, VectorIndex, placeholder_vector
from recstream.core.ports import Embedder
from recstream.infra.dlq import DeadLetterWriter
from recstream.infra.messages import Record
from recstream.infra.metrics import PROCESSING_LAG
from recstream.infra.vector_log import VectorLogWriter
from recstream.schemas.errors import InvalidMessageError
from recstream.schemas.events import CatalogEvent, EventDecoder
from recstream.schemas.vectors import VectorRecord
from recstream.streams.catalog_metrics import (
    CATALOG_EMBED_BATCH,
    CATALOG_EMBED_SECONDS,
    CATALOG_EVENTS,
)
from recstream.streams.text import content_hash, item_text

_PURGE_EVERY_MS = 3600 * 1000


@dataclass
class CatalogPlan:
    """What one batch of catalog events asks of the index."""

    embed: list[tuple[ItemPayload, str]] = field(default_factory=list)  # payload, text
    rewrite_payload: list[ItemPayload] = field(default_factory=list)  # same text, other payload
    tombstones: list[ItemPayload] = field(default_factory=list)  # deletes
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def _payload(event: CatalogEvent, digest: str) -> ItemPayload:
    return ItemPayload(
        item_id=event.item_id,
        title=event.title,
        category=event.category,
        tags=event.tags,
        available=event.available,
        content_hash=digest,
        updated_ms=event.event_time,
        attributes=event.attributes,
    )


def _latest_per_item(events: Sequence[CatalogEvent], plan: CatalogPlan) -> list[CatalogEvent]:
    latest: dict[str, CatalogEvent] = {}
    for event in events:
        current = latest.get(event.item_id)
        if current is not None:
            plan.count("superseded")
            if event.event_time < current.event_time:
                continue
        latest[event.item_id] = event
    return list(latest.values())


def plan_catalog_batch(
    events: Sequence[CatalogEvent], stored: Mapping[str, ItemPayload], model_id: str
) -> CatalogPlan:
    """Decide per item: embed (new or changed text), rewrite payload only, delete, or skip.

    An event older than the stored item (or its tombstone) is stale and skipped, so replays
    and reordering never roll an item back and an old upsert never brings a deleted item back.
    An item whose text hash is unchanged is never embedded again, also when it comes back
    after a delete (its tombstone keeps the vector).
    """
    plan = CatalogPlan()
    for event in _latest_per_item(events, plan):
        current = stored.get(event.item_id)
        if current is not None and event.event_time < current.updated_ms:
            plan.count("stale")
        elif event.op == "delete":
            plan.tombstones.append(_tombstone(event, current))
            plan.count("deleted")
        else:
            text = item_text(event)
            payload = _payload(event, content_hash(text, model_id))
            if current is None or current.content_hash != payload.content_hash:
                plan.embed.append((payload, text))
                plan.count("embedded")
            elif _same_payload(current, payload):
                plan.count("unchanged")
            else:
                plan.rewrite_payload.append(payload)
                plan.count("payload_updated")
    return plan


def _tombstone(event: CatalogEvent, current: ItemPayload | None) -> ItemPayload:
    if current is not None:
        return current.tombstone(event.event_time)
    never_stored = ItemPayload(event.item_id, "", None, (), False, "", event.event_time)
    return never_stored.tombstone(event.event_time)


def _same_payload(a: ItemPayload, b: ItemPayload) -> bool:
    # updated_ms alone changing is not worth a write.
    return a.to_payload() | {"updated_ms": 0} == b.to_payload() | {"updated_ms": 0}


class CatalogProcessor:
    """Applies batches of raw catalog messages; a bad message is dead-lettered, never raised."""

    def __init__(
        self,
        index: VectorIndex,
        embedder: Embedder,
        dead_letters: DeadLetterWriter,
        decoder: EventDecoder | None = None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        *,
        tombstone_retention_ms: int,
        vector_log: VectorLogWriter | None = None,
        filter_attributes: Mapping[str, AttributeType] | None = None,
    ) -> None:
        self._index = index
        self._vector_log = vector_log
        self._embedder = embedder
        self._dead_letters = dead_letters
        self._decoder = decoder or EventDecoder()
        self._clock_ms = clock_ms
        self._tombstone_retention_ms = tombstone_retention_ms
        self._purged_at_ms = 0
        self._filter_attributes = filter_attributes or {}

    def dead_letter(self, message: Record, error: InvalidMessageError) -> None:
        """Dead-letter one record (one isolated as failing its batch); `flush_dead_letters`
        waits for it."""
        self._dead_letters.dead_letter(message, error)

    def flush_dead_letters(self) -> None:
        self._dead_letters.flush()

    def process(self, messages: Sequence[Record]) -> CatalogPlan:
        """Decode, plan, embed and write one batch; dead letters are flushed before returning."""
        events = self._decode(messages)
        stored = self._index.retrieve(
            sorted({e.item_id for e in events}), with_vectors=True, include_deleted=True
        )
        plan = plan_catalog_batch(
            events, {k: r.payload for k, r in stored.items()}, self._embedder.model_id
        )
        self._write(plan, stored)
        self._purge_old_tombstones()
        self._dead_letters.flush()
        for outcome, count in plan.outcomes.items():
            CATALOG_EVENTS.labels(outcome).inc(count)
        if events:
            newest = max(e.event_time for e in events)
            PROCESSING_LAG.labels("catalog").set(max(0.0, (self._clock_ms() - newest) / 1000))
        return plan

    def _purge_old_tombstones(self) -> None:
        """At most hourly: tombstones older than the retention go (a later upsert of such an
        item is taken as new; docs/reliability.md)."""
        now = self._clock_ms()
        if now - self._purged_at_ms >= _PURGE_EVERY_MS:
            self._index.purge_deleted(now - self._tombstone_retention_ms)
            self._purged_at_ms = now

    def _decode(self, messages: Sequence[Record]) -> list[CatalogEvent]:
        now = self._clock_ms()
        return self._dead_letters.decode_all(
            messages,
            lambda value: self._typed(self._decoder.catalog(value, now)),
            CATALOG_EVENTS.labels("dead_lettered"),
        )

    def _typed(self, event: CatalogEvent) -> CatalogEvent:
        """The event with its filterable attributes typed as their index expects; one that
        cannot be (a word where a number is declared) is refused with the reason."""
        if not self._filter_attributes or not event.attributes:
            return event
        try:
            attributes = typed_attributes(event.attributes, self._filter_attributes)
        except ValueError as error:
            raise InvalidMessageError("schema_violation", str(error), field="attributes") from None
        return replace(event, attributes=attributes)

    def _write(self, plan: CatalogPlan, stored: Mapping[str, ItemRecord]) -> None:
        """Every item the plan changes: to the vector topic first (acknowledged), then to this
        processor's own index, which its next batches read."""
        items: list[tuple[ItemPayload, Vector]] = []
        if plan.embed:
            started = time.perf_counter()
            vectors = self._embedder.embed([text for _, text in plan.embed])
            CATALOG_EMBED_SECONDS.observe(time.perf_counter() - started)
            CATALOG_EMBED_BATCH.observe(len(plan.embed))
            items += [(payload, vectors[i]) for i, (payload, _) in enumerate(plan.embed)]
        rewrites = [(p, stored[p.item_id].vector) for p in plan.rewrite_payload]
        items += [(p, v) for p, v in rewrites if v is not None]
        items += [(p, self._vector_of(p, stored)) for p in plan.tombstones]
        if not items:
            return
        if self._vector_log is not None:
            self._vector_log.publish([VectorRecord(p, v) for p, v in items])
            self._vector_log.flush()
        self._index.upsert(items)

    def _vector_of(self, payload: ItemPayload, stored: Mapping[str, ItemRecord]) -> Vector:
        record = stored.get(payload.item_id)
        if record is not None and record.vector is not None:
            return record.vector
        return placeholder_vector(self._index.dimension)
