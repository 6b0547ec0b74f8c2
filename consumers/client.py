"""Python SDK: `RecClient` (blocking) and `AsyncRecClient` (asyncio) for producers and clients.

Reply routing: every client reads one partition of the shared responses topic, chosen at start
(`reply_partition`, default: a random one), and sends that partition in each request. The worker
writes the answer there, so a client reads only the replies of about 1/P of all clients, not all
replies, and needs no consumer group (no rebalances when clients come and go). With more clients
than partitions, several share one and skip each other's answers by request_id; raise the
responses topic's partition count to keep that share small.

One client may have many requests in flight, from many threads or coroutines: a reader thread
takes every answer from the reply partition and hands it to the request waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaException, Producer, TopicPartition

from recstream.consumers.errors import RequestTimeoutError
from recstream.core.settings import Settings
from recstream.infra.clients import is_outage, kafka_config
from recstream.infra.messages import poll_available
from recstream.schemas.errors import InvalidMessageError
from recstream.schemas.events import CatalogEvent, EventDecoder, InteractionEvent, TimeBounds
from recstream.schemas.requests import RecommendRequest, RecommendResponse, RequestCodec

log = logging.getLogger(__name__)


class _Replies:
    """Answers handed to the requests waiting for them. An answer nobody waits for yet (a
    request sent elsewhere with our partition, or another client's) is kept, boundedly, so a
    waiter that registers after its answer arrived still gets it."""

    def __init__(self, keep: int = 1000) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, Future[RecommendResponse]] = {}
        self._unclaimed: OrderedDict[str, RecommendResponse] = OrderedDict()
        self._keep = keep

    def expect(self, request_id: str) -> Future[RecommendResponse]:
        future: Future[RecommendResponse] = Future()
        with self._lock:
            early = self._unclaimed.pop(request_id, None)
            if early is None:
                future = self._waiting.setdefault(request_id, future)
        if early is not None:
            future.set_result(early)
        return future

    def deliver(self, response: RecommendResponse) -> None:
        with self._lock:
            future = self._waiting.pop(response.request_id, None)
            if future is None:
                self._unclaimed[response.request_id] = response
                while len(self._unclaimed) > self._keep:
                    self._unclaimed.popitem(last=False)
                return
        with contextlib.suppress(InvalidStateError):  # the waiter gave up (cancelled) just now
            future.set_result(response)

    def forget(self, request_id: str) -> None:
        with self._lock:
            self._waiting.pop(request_id, None)


class RecClient:
    def __init__(
        self, settings: Settings, reply_partition: int | None = None, timeout_s: float = 5.0
    ) -> None:
        config = kafka_config(settings)
        self._settings = settings
        self._timeout_s = timeout_s
        self._codec = RequestCodec()
        self._decoder = EventDecoder(
            TimeBounds(settings.min_event_time_ms, settings.max_clock_skew_ms)
        )
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
        self._replies = _Replies()
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read_replies, name="reply-reader", daemon=True)
        self._reader.start()

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    def _listen(self) -> None:
        """Read our reply partition from its current end: no earlier reply is taken for ours.
        A partition without a leader yet (a topic just made, a broker restarting) is asked
        again until the client's timeout."""
        part = TopicPartition(self._settings.topic_responses, self.reply_partition)
        deadline = time.monotonic() + self._timeout_s
        while True:
            try:
                _, high = self._consumer.get_watermark_offsets(part, timeout=self._timeout_s)
                break
            except KafkaException as error:
                if not is_outage(error) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
        part.offset = high if high >= 0 else OFFSET_END
        self._consumer.assign([part])

    def recommend(self, user_id: str, k: int = 10, **options: Any) -> RecommendResponse:
        """Recommendations for a user. Options: categories_in, categories_out, available_only,
        exclude, diversity, preference_text, preference_categories, deadline_ms,
        max_per_category, trending, tags_any, attributes (AttributeCondition, on the worker's
        filterable attributes)."""
        return self.ask(RecommendRequest(new_request_id(), k, user_id=user_id, **options))

    def similar(self, item_id: str, k: int = 10, **options: Any) -> RecommendResponse:
        """More like this item."""
        return self.ask(RecommendRequest(new_request_id(), k, item_id=item_id, **options))

    def ask(
        self,
        request: RecommendRequest,
        timeout_s: float | None = None,
        partition: int | None = None,
    ) -> RecommendResponse:
        """Send a request and wait for its answer. Safe to call from many threads at once.
        `partition` sends it to that request partition, so to the replica that owns it (a
        canary probing every replica); by default its user or item picks one."""
        answer = self.submit(request, partition)
        self._producer.flush(self._timeout_s)
        return self._result(request.request_id, answer, timeout_s)

    def submit(
        self, request: RecommendRequest, partition: int | None = None
    ) -> Future[RecommendResponse]:
        """Send a request without waiting: a future of its answer (see `forget`)."""
        answer = self._replies.expect(request.request_id)  # before sending: no answer is missed
        self._send(request, partition)
        self._producer.poll(0)
        return answer

    def forget(self, request_id: str) -> None:
        """Stop waiting for an answer (e.g. after a timeout)."""
        self._replies.forget(request_id)

    def _send(self, request: RecommendRequest, partition: int | None = None) -> None:
        """Produce a request routed to our reply partition."""
        routed = RecommendRequest(
            **{
                **_fields(request),
                "reply_to": self._settings.topic_responses,
                "reply_partition": self.reply_partition,
            }
        )
        key = (request.user_id or request.item_id or "").encode()
        topic, value = self._settings.topic_requests, routed.to_json()
        if partition is None:
            self._producer.produce(topic, value, key=key)
        else:
            self._producer.produce(topic, value, key=key, partition=partition)

    def ask_many(
        self, requests: Sequence[RecommendRequest], timeout_s: float | None = None
    ) -> list[RecommendResponse]:
        """Send several requests at once and wait for all their answers (in request order):
        a worker with several handler threads answers them side by side."""
        answers = [self.submit(request) for request in requests]
        self._producer.flush(self._timeout_s)
        deadline = time.monotonic() + (timeout_s or self._timeout_s)
        return [
            self._result(r.request_id, a, max(0.0, deadline - time.monotonic()))
            for r, a in zip(requests, answers, strict=True)
        ]

    def wait_for(self, request_id: str, timeout_s: float | None = None) -> RecommendResponse:
        """The answer to request_id on our reply partition (e.g. for a request sent elsewhere
        with our reply_partition), even if it arrived a little before this call."""
        return self._result(request_id, self._replies.expect(request_id), timeout_s)

    def _result(
        self, request_id: str, answer: Future[RecommendResponse], timeout_s: float | None
    ) -> RecommendResponse:
        waited = self._timeout_s if timeout_s is None else timeout_s
        try:
            return answer.result(waited)
        except TimeoutError:
            self.forget(request_id)
            raise _timed_out(request_id, waited) from None

    def _read_replies(self) -> None:
        while not self._closing.is_set():
            try:
                messages = poll_available(self._consumer, 64, 0.05)
            except KafkaException as error:
                log.warning("reading replies failed: %s", error)
                continue
            for message in messages:
                if message.error() is not None:
                    continue
                try:
                    self._replies.deliver(self._codec.response(message.value()))
                except InvalidMessageError as error:  # not ours to answer: note and go on
                    log.warning("unreadable reply skipped: %s", error)

    def track(self, event: InteractionEvent) -> None:
        """Publish an interaction event (keyed by user). Raises InvalidMessageError, sending
        nothing, for an event the processor would refuse (an unknown event type, a rating
        without a value, a time in the future ...)."""
        value = event.to_json()
        self._decoder.interaction(value, _now_ms())
        self._producer.produce(self._settings.topic_interactions, value, key=event.user_id.encode())
        self._producer.poll(0)

    def upsert_item(self, event: CatalogEvent) -> None:
        """Publish a catalog event (keyed by item); validated like `track`."""
        value = event.to_json()
        self._decoder.catalog(value, _now_ms())
        self._producer.produce(self._settings.topic_catalog, value, key=event.item_id.encode())
        self._producer.poll(0)

    def flush(self) -> None:
        self._producer.flush(self._timeout_s)

    def close(self) -> None:
        self.flush()
        self._closing.set()
        self._reader.join(5)
        self._consumer.close()

    def __enter__(self) -> RecClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncRecClient:
    """The same calls for asyncio code. Requests run concurrently: each awaits its own answer
    from the shared reply reader."""

    def __init__(
        self, settings: Settings, reply_partition: int | None = None, timeout_s: float = 5.0
    ) -> None:
        self._client = RecClient(settings, reply_partition, timeout_s)

    async def recommend(self, user_id: str, k: int = 10, **options: Any) -> RecommendResponse:
        return await self.ask(RecommendRequest(new_request_id(), k, user_id=user_id, **options))

    async def similar(self, item_id: str, k: int = 10, **options: Any) -> RecommendResponse:
        return await self.ask(RecommendRequest(new_request_id(), k, item_id=item_id, **options))

    async def ask(self, request: RecommendRequest) -> RecommendResponse:
        answer = asyncio.wrap_future(self._client.submit(request))
        timeout_s = self._client.timeout_s
        try:
            return await asyncio.wait_for(answer, timeout_s)
        except TimeoutError:
            self._client.forget(request.request_id)
            raise _timed_out(request.request_id, timeout_s) from None

    async def ask_many(self, requests: Sequence[RecommendRequest]) -> list[RecommendResponse]:
        return list(await asyncio.gather(*(self.ask(r) for r in requests)))

    async def track(self, event: InteractionEvent) -> None:
        await asyncio.to_thread(self._client.track, event)

    async def upsert_item(self, event: CatalogEvent) -> None:
        await asyncio.to_thread(self._client.upsert_item, event)

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)


def _timed_out(request_id: str, seconds: float) -> RequestTimeoutError:
    return RequestTimeoutError(
        f"no response to {request_id} within {seconds:g}s (is a query worker running?)"
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def new_request_id() -> str:
    return uuid.uuid4().hex


def _fields(request: RecommendRequest) -> dict[str, Any]:
    return {name: getattr(request, name) for name in request.__slots__}
