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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from recstream.consumers import metrics
from recstream.consumers.errors import BadRequestError
from recstream.consumers.recommender import Recommender
from recstream.core.pressure import QueryPressure
from recstream.core.progress import RoleProgress
from recstream.infra.dlq import DeadLetterWriter
from recstream.infra.errors import DeadLetterError
from recstream.infra.messages import from_kafka, is_fatal, poll_available, raise_if_fatal
from recstream.schemas.errors import InvalidMessageError
from recstream.schemas.requests import RecommendRequest, RecommendResponse, RequestCodec

log = logging.getLogger(__name__)
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,200}")


class ReplyTargets:
    """Where answers may go: the allowed topics and their real partition counts (from metadata,
    refreshed now and then, so a topic that grows is seen). A request cannot make the worker
    write to any other topic or to a partition that does not exist."""

    REFRESH_S = 30.0

    def __init__(self, producer: Producer, allowed: frozenset[str]) -> None:
        self._producer = producer
        self._allowed = allowed
        self._partitions: dict[str, int] = {}
        self._checked = float("-inf")

    def problem(self, topic: str, partition: int | None) -> InvalidMessageError | None:
        """Why an answer cannot go to (topic, partition), or None."""
        if topic not in self._allowed:
            return InvalidMessageError(
                "reply_to_not_allowed",
                f"reply_to {topic!r} is not one of the reply topics {sorted(self._allowed)}",
            )
        count = self._count(topic, refresh=False)
        if partition is not None and partition >= count:
            count = self._count(topic, refresh=True)
        if count == 0:
            return InvalidMessageError("reply_to_unknown", f"reply topic {topic!r} does not exist")
        if partition is not None and partition >= count:
            return InvalidMessageError(
                "reply_partition_out_of_range",
                f"reply_partition {partition} but {topic!r} has {count} partitions",
            )
        return None

    def _count(self, topic: str, refresh: bool) -> int:
        stale = time.monotonic() - self._checked > self.REFRESH_S
        if topic not in self._partitions or (refresh and stale):
            self._checked = time.monotonic()
            try:
                metadata = self._producer.list_topics(topic, timeout=5)
            except KafkaException as error:  # unknown now: refuse nothing we cannot check
                log.warning("reply topic metadata unavailable: %s", error)
                return self._partitions.get(topic, 1 << 30)
            found = metadata.topics.get(topic)
            self._partitions[topic] = (
                len(found.partitions) if found is not None and found.error is None else 0
            )
        return self._partitions[topic]


class QueryWorker:
    def __init__(
        self,
        recommender: Recommender,
        consumer_config: dict[str, Any],
        producer_config: dict[str, Any],
        requests_topic: str,
        responses_topic: str,
        dead_letters: DeadLetterWriter,
        *,
        max_queue_ms: int,
        threads: int,
        pressure: QueryPressure | None = None,
        reply_topics: frozenset[str] = frozenset(),
        progress: RoleProgress | None = None,
        owned: Callable[[], Callable[[int, int], bool]] | None = None,
    ) -> None:
        self._recommender = recommender
        self._pressure = pressure or QueryPressure()
        self._responses_topic = responses_topic
        self._max_queue_ms = max_queue_ms
        self._codec = RequestCodec()
        self._dead_letters = dead_letters
        self.progress = progress or RoleProgress("query")
        self._consumer = Consumer(
            consumer_config
            | {
                # earliest: a request sent while the group was forming still gets its answer;
                # one that waited too long is answered "overloaded" without work.
                "auto.offset.reset": "earliest",
                "enable.auto.commit": True,
                "fetch.wait.max.ms": 5,
                "fetch.min.bytes": 1,
            }
        )
        self._consumer.subscribe([requests_topic])
        # Which requests this worker's pipeline version answers, read afresh for each batch
        # (None: all of them). Every version's workers read every request in a group of their
        # own, so a switch moves no partition: each request is answered by its owner.
        self._owned = owned
        self._producer = Producer(producer_config | {"linger.ms": 0, "acks": 1})
        self._targets = ReplyTargets(self._producer, reply_topics | {responses_topic})
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
        self.progress.beat()
        messages = poll_available(self._consumer, 64, timeout_s)
        requests = []
        for message in messages:
            error = message.error()
            if error is None:
                requests.append(message)
            elif error.code() != KafkaError._PARTITION_EOF:
                raise_if_fatal(error)
                log.warning("consumer error: %s", error)
        requests = self._owned_requests(requests)
        self._pressure.taken(len(requests))
        for message in requests:
            self._dispatch(message)
        self._producer.poll(0)
        return len(requests)

    def _owned_requests(self, messages: list[Message]) -> list[Message]:
        """The requests of the batch this pipeline version answers (the others belong to the
        version active when they were sent, which answers them)."""
        if self._owned is None or not messages:
            return messages
        owns = self._owned()
        mine = [m for m in messages if owns(m.partition() or 0, m.offset() or 0)]
        if len(mine) < len(messages):
            metrics.OTHER_VERSION.inc(len(messages) - len(mine))
        return mine

    def _dispatch(self, message: Message) -> None:
        if self._pool is None:
            self._handle(message)
            return
        self._slots.acquire()
        self._pool.submit(self._handle_in_thread, message)

    def _handle_in_thread(self, message: Message) -> None:
        try:
            self._handle(message)
        finally:
            self._slots.release()

    def _handle(self, message: Message) -> None:
        self.progress.holding(id(message))
        try:
            self._answer_and_reply(message)
        except Exception:  # never expected (each step owns its failures): keep serving
            log.exception("request handling failed")
            metrics.REQUESTS.labels("failed").inc()
        finally:
            self.progress.released(id(message))
            self._pressure.answered()

    def _answer_and_reply(self, message: Message) -> None:
        started = time.perf_counter()
        try:
            request = self._codec.request(message.value())
            bad_address = self._targets.problem(
                request.reply_to or self._responses_topic, request.reply_partition
            )
            if bad_address is not None:
                raise bad_address
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
        except BadRequestError as error:
            return RecommendResponse(request.request_id, "error", error=str(error))
        except Exception as error:  # an answer is owed even when a store fails
            log.exception("request %s failed", request.request_id)
            return RecommendResponse(request.request_id, "error", error=f"internal error: {error}")

    def _refuse(self, message: Message, error: InvalidMessageError) -> None:
        """Answer an invalid request with its reason where it can be answered (a request id and
        an allowed address); else dead-letter it."""
        request_id, reply_to, partition = _reply_address(message.value())
        topic = reply_to or self._responses_topic
        if request_id is None or self._targets.problem(topic, partition) is not None:
            self._dead_letters.dead_letter(from_kafka(message), error)
            try:
                self._dead_letters.flush()
            except DeadLetterError as failure:  # the broker is away: say so, keep serving
                log.warning("a refused request could not be dead-lettered: %s", failure)
            metrics.REQUESTS.labels("dead_lettered").inc()
            return
        response = RecommendResponse(request_id, "error", error=str(error))
        self._produce(topic, partition, request_id, response)
        metrics.REQUESTS.labels("error").inc()

    def _reply(self, request: RecommendRequest, response: RecommendResponse) -> None:
        topic = request.reply_to or self._responses_topic
        self._produce(topic, request.reply_partition, request.request_id, response)

    def _produce(
        self, topic: str, partition: int | None, key: str, response: RecommendResponse
    ) -> None:
        """Send an answer; a failure is logged and counted, never raised (it is this one
        answer's, and the loop must keep serving the others)."""
        options: dict[str, Any] = {"key": key.encode(), "on_delivery": _count_failed_delivery}
        if partition is not None:
            options["partition"] = partition
        value = response.to_json()
        for _ in range(50):  # a full local queue: up to 5 s for deliveries to drain
            try:
                self._producer.produce(topic, value, **options)
                return
            except BufferError:
                self._producer.poll(0.1)
            except KafkaException as error:
                log.warning("answer to %s not sent: %s", key, error)
                metrics.REPLIES_FAILED.labels(error.args[0].name()).inc()
                return
        metrics.REPLIES_FAILED.labels("local_queue_full").inc()

    def run(self) -> None:
        """Serve until `stop`; an error in one turn of the loop is logged and the loop goes on
        (a query role never dies of one request). A fatal client error (a fenced static member)
        ends the role instead: the client is unusable for good, and the worker exits for its
        process manager to start a fresh one."""
        try:
            while not self._stop.is_set():
                try:
                    self.run_once()
                except KafkaException as error:
                    if is_fatal(error.args[0]):
                        raise
                    self._turn_failed()
                except Exception:
                    self._turn_failed()
        finally:
            self.close()

    def _turn_failed(self) -> None:
        log.exception("query loop turn failed")
        metrics.LOOP_ERRORS.inc()
        self._stop.wait(0.1)

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


def _count_failed_delivery(error: KafkaError | None, message: Message) -> None:
    if error is not None:
        log.warning("response to %s not delivered: %s", message.key(), error)
        metrics.REPLIES_FAILED.labels(error.name()).inc()
