"""The staging workload: interactions and recommendation requests at steady rates at the same
time, a catalog trickle, and a share of malformed records on every input topic. It keeps what a
verdict needs: every acknowledged event id, every malformed record's key, every request's fate.

Interactions only name the seed catalog's items, and the trickle only touches its own items, so
the state a clean replay builds does not depend on when catalog records were applied."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
from confluent_kafka import KafkaError, Message, Producer

from recstream.consumers.client import RecClient
from recstream.core.settings import Settings
from recstream.infra.clients import QUIET_LOGGER, kafka_config
from recstream.schemas.events import CatalogEvent, InteractionEvent
from recstream.schemas.requests import RecommendRequest, RecommendResponse

EVENT_TYPES = (
    "view",
    "view",
    "view",
    "click",
    "click",
    "add_to_cart",
    "purchase",
    "like",
    "dislike",
    "skip",
)
CATEGORIES = ("Drama", "Comedy", "Action", "Documentary", "Horror", "Romance")
WORDS = ("river", "city", "night", "storm", "garden", "machine", "winter", "song", "island")
# Records no decoder accepts, whatever the topic: each must reach that topic's DLQ.
MALFORMED = (
    b"not json at all",
    b"[1, 2, 3]",
    b'{"schema_version": 1}',
    b"\xff\xfe\x00 not utf-8",
    b'{"schema_version": 1, "event_id": 7, "user_id": [], "item_id": {}, "event_type": 3}',
    b'{"schema_version": 99, "event_id": "x", "item_id": "x", "op": "explode"}',
)
NEAR_LIMIT_BYTES = 1_040_000  # just under the broker's default 1 MiB message limit


@dataclass(frozen=True)
class Rates:
    interactions_per_s: float
    requests_per_s: float
    catalog_per_s: float
    malformed_share: float  # of every topic's records


REQUEST_TIMEOUT_S = 30.0  # the client's: an answer later than this is not waited for


@dataclass
class RequestFate:
    sent: float
    answered: float | None = None
    status: str | None = None
    state_age_ms: float | None = None


@dataclass
class Ledger:
    """What was sent and what came back."""

    acked_events: dict[str, str] = field(default_factory=dict)  # event id -> user
    ack_times: list[float] = field(default_factory=list)
    failed_events: int = 0
    malformed: dict[str, set[str]] = field(default_factory=dict)  # topic -> acked keys
    requests: dict[str, RequestFate] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def seed_item_ids(count: int) -> list[str]:
    return [f"s{n}" for n in range(count)]


def catalog_event(item_id: str, n: int, op: str = "upsert") -> CatalogEvent:
    words = " ".join(WORDS[(n * k) % len(WORDS)] for k in (1, 3, 5))
    return CatalogEvent(
        f"c-{item_id}-{n}",
        item_id,
        op,
        int(time.time() * 1000),
        title=f"{words.title()} {n}",
        description=f"a story of {words}",
        category=CATEGORIES[n % len(CATEGORIES)],
        tags=(WORDS[n % len(WORDS)],),
    )


class Workload:
    """Producer threads at `rates` until `stop`; `request_rate` can be changed while running
    (the overload burst)."""

    def __init__(self, settings: Settings, users: int, items: list[str], rates: Rates) -> None:
        self.settings = settings
        self.ledger = Ledger()
        self.request_rate = rates.requests_per_s
        self.interaction_rate = rates.interactions_per_s
        self.catalog_rate = rates.catalog_per_s
        self._rates = rates
        self._users = users
        self._items = items
        self._stopping = threading.Event()
        config = {"acks": "all", "enable.idempotence": True, "linger.ms": 5}
        self._producer = Producer(
            kafka_config(settings) | config | {"message.max.bytes": 1_048_576},
            logger=QUIET_LOGGER,  # brokers killed on purpose: the ledger counts what failed
        )
        self._client = RecClient(settings, timeout_s=REQUEST_TIMEOUT_S)
        self._threads: list[threading.Thread] = []
        self._malformed_counter = itertools.count()

    def seed_catalog(self) -> None:
        for n, item in enumerate(self._items):
            self._producer.produce(
                self.settings.topic_catalog, catalog_event(item, n).to_json(), key=item.encode()
            )
        self._producer.flush(60)

    def start(self) -> None:
        loops: list[Callable[[], None]] = [self._interactions, self._requests, self._catalog]
        self._threads = [threading.Thread(target=loop, daemon=True) for loop in loops]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(30)
        self._producer.flush(60)

    def close(self, wait_for_answers_s: float = REQUEST_TIMEOUT_S) -> None:
        """Wait for outstanding answers, then close the client."""
        deadline = time.monotonic() + wait_for_answers_s
        while time.monotonic() < deadline and self.unanswered():
            time.sleep(0.2)
        self._client.close()

    def unanswered(self) -> int:
        with self.ledger.lock:
            return sum(1 for fate in self.ledger.requests.values() if fate.status is None)

    def near_limit_records(self) -> dict[str, str]:
        """One record just under the size limit on each input topic; topic -> its key."""
        keys = {}
        body = b'{"pad": "' + b"x" * (NEAR_LIMIT_BYTES - 11) + b'"}'
        for topic in self._input_topics():
            keys[topic] = f"big-{topic}"
            self._produce_tracked(topic, keys[topic], body)
        self._producer.flush(60)
        return keys

    def _input_topics(self) -> tuple[str, ...]:
        s = self.settings
        return (s.topic_interactions, s.topic_catalog, s.topic_requests)

    def _ticks(self, rate: Callable[[], float]) -> Iterator[int]:
        """How many records to send at each 20 ms tick to keep `rate` per second."""
        owed, last = 0.0, time.monotonic()
        while not self._stopping.wait(0.02):
            now = time.monotonic()
            owed += rate() * (now - last)
            last = now
            whole = int(owed)
            owed -= whole
            yield whole

    def _malformed_instead(self, rng: np.random.Generator, topic: str) -> bool:
        if rng.random() >= self._rates.malformed_share:
            return False
        n = next(self._malformed_counter)
        self._produce_tracked(topic, f"bad-{n}", MALFORMED[n % len(MALFORMED)])
        return True

    def _produce_tracked(self, topic: str, key: str, value: bytes) -> None:
        def delivered(error: KafkaError | None, _: Message) -> None:
            if error is None:
                with self.ledger.lock:
                    self.ledger.malformed.setdefault(topic, set()).add(key)

        self._producer.produce(topic, value, key=key.encode(), on_delivery=delivered)

    def _interactions(self) -> None:
        rng = np.random.default_rng(1)
        sequence = itertools.count()
        topic = self.settings.topic_interactions
        for count in self._ticks(lambda: self.interaction_rate):
            for _ in range(count):
                if self._malformed_instead(rng, topic):
                    continue
                event = self._event(rng, next(sequence))
                self._producer.produce(
                    topic,
                    event.to_json(),
                    key=event.user_id.encode(),
                    on_delivery=self._acked(event),
                )
            self._producer.poll(0)

    def _event(self, rng: np.random.Generator, n: int) -> InteractionEvent:
        user = f"u{min(int(rng.zipf(1.3)), self._users) - 1}"
        item = self._items[min(int(rng.zipf(1.2)), len(self._items)) - 1]
        kind = EVENT_TYPES[n % len(EVENT_TYPES)]
        return InteractionEvent(f"e{n}", user, item, kind, int(time.time() * 1000))

    def _acked(self, event: InteractionEvent) -> Callable[[KafkaError | None, Message], None]:
        def delivered(error: KafkaError | None, _: Message) -> None:
            with self.ledger.lock:
                if error is None:
                    self.ledger.acked_events[event.event_id] = event.user_id
                    self.ledger.ack_times.append(time.time())
                else:
                    self.ledger.failed_events += 1

        return delivered

    def _requests(self) -> None:
        rng = np.random.default_rng(2)
        sequence = itertools.count()
        topic = self.settings.topic_requests
        for count in self._ticks(lambda: self.request_rate):
            for _ in range(count):
                if self._malformed_instead(rng, topic):
                    continue
                user = f"u{min(int(rng.zipf(1.3)), self._users) - 1}"
                self._ask(RecommendRequest(f"q{next(sequence)}", 10, user_id=user))

    def _ask(self, request: RecommendRequest) -> None:
        fate = RequestFate(time.time())
        with self.ledger.lock:
            self.ledger.requests[request.request_id] = fate

        def answered(future: Future[RecommendResponse]) -> None:
            if future.cancelled() or future.exception() is not None:
                return
            response = future.result()
            fate.answered, fate.status = time.time(), response.status
            fate.state_age_ms = response.timings_ms.get("state_age")

        self._client.submit(request).add_done_callback(answered)

    def _catalog(self) -> None:
        rng = np.random.default_rng(3)
        sequence = itertools.count()
        topic = self.settings.topic_catalog
        for count in self._ticks(lambda: self.catalog_rate):
            for _ in range(count):
                if self._malformed_instead(rng, topic):
                    continue
                n = next(sequence)
                # new trickle items, changes to them, and now and then a delete
                item = f"t{n // 3}"
                op = "delete" if n % 9 == 8 else "upsert"
                event = catalog_event(item, n, op)
                self._producer.produce(topic, event.to_json(), key=item.encode())
            self._producer.poll(0)
