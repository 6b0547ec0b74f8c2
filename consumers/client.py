"""Python SDK: `RecClient` (blocking) and `AsyncRecClient` (asyncio) for producers and clients.

Reply routing: every client reads one partition of the shared responses topic, chosen at start
(`reply_partition`, default: a random one), and sends that partition in each request. The worker
writes the answer there, so a client reads only the replies of about 1/P of all clients, not all
replies, and needs no consumer group (no rebalances when clients come and go). With more clients
than partitions, several share one and skip each other's answers by request_id; raise the
responses topic's partition count to keep that share small.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Sequence
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from recstream.errors import RecstreamError
from recstream.schemas.events import CatalogEvent, InteractionEvent
from recstream.schemas.requests import RecommendRequest, RecommendResponse, RequestCodec
from recstream.settings import Settings
from recstream.streams.messages import poll_available


class RequestTimeoutError(RecstreamError):
    """No response arrived in time."""


class RecClient:
    def __init__(
        self, settings: Settings, reply_partition: int | None = None, timeout_s: float = 5.0
    ) -> None:
        config = settings.kafka_client_config()
        self._settings = settings
        self._timeout_s = timeout_s
        self._codec = RequestCodec()
        self._producer = Producer(config | {"linger.ms": 0, "enable.idempotence": True})
        self._consumer = Consumer(
            config
            | {
                "group.id": f"recstream-client-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
            }
        )
        partitions = settings.partitions_responses
        self.reply_partition = (
            random.randrange(partitions) if reply_partition is None else reply_partition
        )
        self._listen()

    def _listen(self) -> None:
        """Read our reply partition from its current end: no earlier reply is taken for ours."""
        part = TopicPartition(self._settings.topic_responses, self.reply_partition)
        _, high = self._consumer.get_watermark_offsets(part, timeout=self._timeout_s)
        part.offset = high if high >= 0 else OFFSET_END
        self._consumer.assign([part])

    def recommend(self, user_id: str, k: int = 10, **options: Any) -> RecommendResponse:
        """Recommendations for a user. Options: categories_in, categories_out, available_only,
        exclude, diversity, preference_text, preference_categories, deadline_ms."""
        return self.ask(RecommendRequest(self._new_id(), k, user_id=user_id, **options))

    def similar(self, item_id: str, k: int = 10, **options: Any) -> RecommendResponse:
        """More like this item."""
        return self.ask(RecommendRequest(self._new_id(), k, item_id=item_id, **options))

    def ask(self, request: RecommendRequest, timeout_s: float | None = None) -> RecommendResponse:
        """Send a request and wait for its answer (other answers on our partition are skipped)."""
        self._send(request)
        self._producer.flush(self._timeout_s)
        return self.wait_for(request.request_id, timeout_s)

    def _send(self, request: RecommendRequest) -> None:
        """Produce a request routed to our reply partition."""
        routed = RecommendRequest(
            **{
                **_fields(request),
                "reply_to": self._settings.topic_responses,
                "reply_partition": self.reply_partition,
            }
        )
        key = (request.user_id or request.item_id or "").encode()
        self._producer.produce(self._settings.topic_requests, routed.to_json(), key=key)

    def ask_many(
        self, requests: Sequence[RecommendRequest], timeout_s: float | None = None
    ) -> list[RecommendResponse]:
        """Send several requests at once and wait for all their answers (in request order):
        a worker with several handler threads answers them side by side."""
        for request in requests:
            self._send(request)
        self._producer.flush(self._timeout_s)
        wanted = {r.request_id for r in requests}
        answers: dict[str, RecommendResponse] = {}
        deadline = time.monotonic() + (timeout_s or self._timeout_s)
        while len(answers) < len(wanted) and time.monotonic() < deadline:
            for response in self._poll_responses():
                if response.request_id in wanted:
                    answers[response.request_id] = response
        missing = wanted - answers.keys()
        if missing:
            raise RequestTimeoutError(f"no response to {len(missing)} of {len(wanted)} requests")
        return [answers[r.request_id] for r in requests]

    def wait_for(self, request_id: str, timeout_s: float | None = None) -> RecommendResponse:
        """The answer to request_id on our reply partition (e.g. for a request sent elsewhere
        with our reply_partition); other answers are skipped."""
        deadline = time.monotonic() + (timeout_s or self._timeout_s)
        while time.monotonic() < deadline:
            for response in self._poll_responses():
                if response.request_id == request_id:
                    return response
        raise RequestTimeoutError(
            f"no response to {request_id} within "
            f"{timeout_s or self._timeout_s:g}s (is a query worker running?)"
        )

    def _poll_responses(self) -> list[RecommendResponse]:
        return [
            self._codec.response(message.value())
            for message in poll_available(self._consumer, 64, 0.05)
            if message.error() is None
        ]

    def track(self, event: InteractionEvent) -> None:
        """Publish an interaction event (keyed by user)."""
        self._producer.produce(
            self._settings.topic_interactions, event.to_json(), key=event.user_id.encode()
        )
        self._producer.poll(0)

    def upsert_item(self, event: CatalogEvent) -> None:
        """Publish a catalog event (keyed by item)."""
        self._producer.produce(
            self._settings.topic_catalog, event.to_json(), key=event.item_id.encode()
        )
        self._producer.poll(0)

    def flush(self) -> None:
        self._producer.flush(self._timeout_s)

    def close(self) -> None:
        self.flush()
        self._consumer.close()

    @staticmethod
    def _new_id() -> str:
        return uuid.uuid4().hex

    def __enter__(self) -> RecClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncRecClient:
    """The same calls for asyncio code; each runs in a worker thread."""

    def __init__(
        self, settings: Settings, reply_partition: int | None = None, timeout_s: float = 5.0
    ) -> None:
        self._client = RecClient(settings, reply_partition, timeout_s)
        self._lock = asyncio.Lock()  # one request in flight per client keeps reply matching simple

    async def recommend(self, user_id: str, k: int = 10, **options: Any) -> RecommendResponse:
        async with self._lock:
            return await asyncio.to_thread(self._client.recommend, user_id, k, **options)

    async def similar(self, item_id: str, k: int = 10, **options: Any) -> RecommendResponse:
        async with self._lock:
            return await asyncio.to_thread(self._client.similar, item_id, k, **options)

    async def ask_many(self, requests: Sequence[RecommendRequest]) -> list[RecommendResponse]:
        async with self._lock:
            return await asyncio.to_thread(self._client.ask_many, requests)

    async def track(self, event: InteractionEvent) -> None:
        await asyncio.to_thread(self._client.track, event)

    async def upsert_item(self, event: CatalogEvent) -> None:
        await asyncio.to_thread(self._client.upsert_item, event)

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)


def _fields(request: RecommendRequest) -> dict[str, Any]:
    return {name: getattr(request, name) for name in request.__slots__}
