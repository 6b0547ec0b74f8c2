"""Catalog processor: catalog events become item vectors and payloads in the vector index.

`plan_catalog_batch` is pure (events + what is stored -> what to do); `CatalogProcessor` does the
I/O around it: decode, dead-letter, look up stored items, embed only what changed, write.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from recstream.schemas.events import CatalogEvent, EventDecoder
from recstream.stores.vector_index import ItemPayload, ItemRecord, VectorIndex
from recstream.streams import metrics
from recstream.streams.dlq import DeadLetterWriter
from recstream.streams.embedder import Embedder
from recstream.streams.messages import RawMessage
from recstream.streams.text import content_hash, item_text


@dataclass
class CatalogPlan:
    """What one batch of catalog events asks of the index."""

    embed: list[tuple[ItemPayload, str]] = field(default_factory=list)  # payload, text
    rewrite_payload: list[ItemPayload] = field(default_factory=list)  # same text, other payload
    delete: list[str] = field(default_factory=list)
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

    An event older than the stored item is stale and skipped, so replays and reordering never
    roll an item back. An item whose text hash is unchanged is never embedded again.
    """
    plan = CatalogPlan()
    for event in _latest_per_item(events, plan):
        current = stored.get(event.item_id)
        if current is not None and event.event_time < current.updated_ms:
            plan.count("stale")
        elif event.op == "delete":
            plan.delete.append(event.item_id)
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
    ) -> None:
        self._index = index
        self._embedder = embedder
        self._dead_letters = dead_letters
        self._decoder = decoder or EventDecoder()
        self._clock_ms = clock_ms

    def process(self, messages: Sequence[RawMessage]) -> CatalogPlan:
        """Decode, plan, embed and write one batch; dead letters are flushed before returning."""
        events = self._decode(messages)
        stored = self._index.retrieve(sorted({e.item_id for e in events}), with_vectors=True)
        plan = plan_catalog_batch(
            events, {k: r.payload for k, r in stored.items()}, self._embedder.model_id
        )
        self._write(plan, stored)
        self._dead_letters.flush()
        for outcome, count in plan.outcomes.items():
            metrics.CATALOG_EVENTS.labels(outcome).inc(count)
        if events:
            newest = max(e.event_time for e in events)
            metrics.PROCESSING_LAG.labels("catalog").set(
                max(0.0, (self._clock_ms() - newest) / 1000)
            )
        return plan

    def _decode(self, messages: Sequence[RawMessage]) -> list[CatalogEvent]:
        now = self._clock_ms()
        return self._dead_letters.decode_all(
            messages,
            lambda value: self._decoder.catalog(value, now),
            metrics.CATALOG_EVENTS.labels("dead_lettered"),
        )

    def _write(self, plan: CatalogPlan, stored: Mapping[str, ItemRecord]) -> None:
        if plan.embed:
            started = time.perf_counter()
            vectors = self._embedder.embed([text for _, text in plan.embed])
            metrics.CATALOG_EMBED_SECONDS.observe(time.perf_counter() - started)
            metrics.CATALOG_EMBED_BATCH.observe(len(plan.embed))
            self._index.upsert([(payload, vectors[i]) for i, (payload, _) in enumerate(plan.embed)])
        rewrites = [(p, stored[p.item_id].vector) for p in plan.rewrite_payload]
        self._index.upsert([(p, v) for p, v in rewrites if v is not None])
        if plan.delete:
            self._index.delete(plan.delete)
