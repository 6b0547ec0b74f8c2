"""The query worker: requests from `reco.requests`, answers to the reply topic. One consumer
thread reads requests and hands each to one of `threads` handler threads (answers are correlated
by request_id, so they may leave out of order). Every request gets an answer: ok, error (with
the reason), expired (deadline passed, no work done) or overloaded (it waited longer than the
worker's budget, so answering it late would only add load). A message with no request id to
answer is dead-lettered."""

from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Message, Producer

from recstream.consumers import metrics
from recstream.consumers.pressure import QueryPressure
from recstream.consumers.recommender import Recommender, UnknownItemError
from recstream.errors import InvalidMessageError
from recstream.schemas.requests import RecommendRequest, RecommendResponse, RequestCodec
from recstream.streams.dlq import DeadLetterWriter
from recstream.streams.messages import from_kafka, poll_available

log = logging.getLogger(__name__)
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,200}")


class QueryWorker:
    def __init__(
        self,
        recommender: Recommender,
        kafka_config: dict[str, Any],
        requests_topic: str,
        responses_topic: str,
        group_id: str,
        dead_letters: DeadLetterWriter,
        max_queue_ms: int = 2000,
        threads: int = 1,
        pressure: QueryPressure | None = None,
    ) -> None:
        self._recommender = recommender
        self._pressure = pressure or QueryPressure()
        self._responses_topic = responses_topic
        self._max_queue_ms = max_queue_ms
        self._codec = RequestCodec()
        self._dead_letters = dead_letters
        self._consumer = Consumer(
            kafka_config
            | {
                "group.id": group_id,
                # earliest: a request sent while the group was forming still gets its answer;
                # one that waited too long is answered "overloaded" without work.
                "auto.offset.reset": "earliest",
                "enable.auto.commit": True,
                "fetch.wait.max.ms": 5,
                "fetch.min.bytes": 1,
            }
        )
        self._consumer.subscribe([requests_topic])
        self._producer = Producer(kafka_config | {"linger.ms": 0, "acks": 1})
        self._stop = threading.Event()
        # Handler threads overlap one request's Redis and index waits with another's Python
        # work. At most 2 x threads requests are taken from Kafka ahead of an idle thread: the
        # rest wait in Kafka, where their age decides "overloaded".
        self._pool = (
            ThreadPoolExecutor(threads, thread_name_prefix="query") if threads > 1 else None
        )
        self._slots = threading.BoundedSemaphore(2 * threads)

    def run_once(self, timeout_s: float = 0.05) -> int:
        """Answer (or hand to a handler thread) what arrived; the number of requests taken."""
        messages = poll_available(self._consumer, 64, timeout_s)
        requests = []
        for message in messages:
            error = message.error()
            if error is None:
                requests.append(message)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", error)
        self._pressure.taken(len(requests))
        for message in requests:
            self._dispatch(message)
        self._producer.poll(0)
        return len(requests)

    def _dispatch(self, message: Message) -> None:
        if self._pool is None:
            self._handle(message)
            return
        self._slots.acquire()
        self._pool.submit(self._handle_in_thread, message)

    def _handle_in_thread(self, message: Message) -> None:
        try:
            self._handle(message)
        except Exception:  # never expected (_answer owns failures); a dying thread would hide it
            log.exception("request handling failed")
        finally:
            self._slots.release()

    def _handle(self, message: Message) -> None:
        try:
            self._answer_and_reply(message)
        finally:
            self._pressure.answered()

    def _answer_and_reply(self, message: Message) -> None:
        started = time.perf_counter()
        try:
            request = self._codec.request(message.value())
        except InvalidMessageError as error:
            self._refuse(message, error)
            return
        response = self._answer(request, message)
        self._reply(request, response)
        metrics.REQUESTS.labels(response.status).inc()
        if response.status == "ok":
            metrics.SERVICE_SECONDS.observe(time.perf_counter() - started)
            metrics.ITEMS_RETURNED.observe(len(response.items))
            if response.strategy:
                metrics.STRATEGIES.labels(response.strategy).inc()
        _, sent_ms = message.timestamp()
        if sent_ms > 0:
            metrics.END_TO_END_SECONDS.observe(max(0.0, time.time() - sent_ms / 1000))

    def _answer(self, request: RecommendRequest, message: Message) -> RecommendResponse:
        _, sent_ms = message.timestamp()
        if sent_ms > 0 and time.time() * 1000 - sent_ms > self._max_queue_ms:
            return RecommendResponse(
                request.request_id,
                "overloaded",
                error=f"request waited more than {self._max_queue_ms} ms",
            )
        try:
            return self._recommender.recommend(request)
        except UnknownItemError as error:
            return RecommendResponse(request.request_id, "error", error=str(error))
        except Exception as error:  # an answer is owed even when a store fails
            log.exception("request %s failed", request.request_id)
            return RecommendResponse(request.request_id, "error", error=f"internal error: {error}")

    def _refuse(self, message: Message, error: InvalidMessageError) -> None:
        """Answer an invalid request with its reason if it has a request id; else dead-letter."""
        request_id, reply_to, partition = _reply_address(message.value())
        if request_id is None:
            self._dead_letters.send(from_kafka(message), error)
            self._dead_letters.flush()
            metrics.REQUESTS.labels("dead_lettered").inc()
            return
        response = RecommendResponse(request_id, "error", error=str(error))
        self._produce(reply_to or self._responses_topic, partition, request_id, response)
        metrics.REQUESTS.labels("error").inc()

    def _reply(self, request: RecommendRequest, response: RecommendResponse) -> None:
        topic = request.reply_to or self._responses_topic
        self._produce(topic, request.reply_partition, request.request_id, response)

    def _produce(
        self, topic: str, partition: int | None, key: str, response: RecommendResponse
    ) -> None:
        options: dict[str, Any] = {"key": key.encode(), "on_delivery": _log_failed_delivery}
        if partition is not None:
            options["partition"] = partition
        try:
            self._producer.produce(topic, response.to_json(), **options)
        except BufferError:
            self._producer.poll(0.1)
            self._producer.produce(topic, response.to_json(), **options)

    def run(self) -> None:
        try:
            while not self._stop.is_set():
                self.run_once()
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # answers in flight are still sent
        self._producer.flush(5)
        self._consumer.close()


def _reply_address(raw: bytes | None) -> tuple[str | None, str | None, int | None]:
    """Best effort: where an invalid request wanted its answer."""
    try:
        message = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None, None, None
    if not isinstance(message, dict):
        return None, None, None
    request_id = message.get("request_id")
    reply_to = message.get("reply_to")
    partition = message.get("reply_partition")
    return (
        request_id if isinstance(request_id, str) and 0 < len(request_id) <= 128 else None,
        reply_to if isinstance(reply_to, str) and _TOPIC.fullmatch(reply_to) else None,
        partition if isinstance(partition, int) and not isinstance(partition, bool) else None,
    )


def _log_failed_delivery(error: KafkaError | None, message: Message) -> None:
    if error is not None:  # e.g. a reply_partition the reply topic does not have
        log.warning("response to %s not delivered: %s", message.key(), error)
