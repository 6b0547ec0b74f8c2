"""Raw Kafka throughput on this machine: the baseline every recstream benchmark is compared with.

Produces N small JSON records to a fresh topic, then reads them back with one confluent-kafka
consumer using batch `consume()`. Prints a JSON line; nothing is asserted (a benchmark,
not a test).
"""

from __future__ import annotations

import argparse
import platform
import time
import uuid

import orjson
from confluent_kafka import Consumer, Producer

from recstream.core.settings import load_settings
from recstream.infra import topics
from recstream.infra.clients import kafka_config
from recstream.produce import send_waiting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=500_000)
    parser.add_argument("--partitions", type=int, default=12)
    args = parser.parse_args()
    settings = load_settings()
    topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
    topics.ensure_topics(settings, [topics.TopicSpec(topic, args.partitions, 1)])
    try:
        produce_s = _produce(kafka_config(settings), topic, args.messages)
        consume_s = _consume(kafka_config(settings), topic, args.messages)
    finally:
        topics.delete_topics(settings, [topic])
    print(
        orjson.dumps(
            {
                "bench": "kafka_baseline",
                "machine": platform.node(),
                "cpu": platform.processor(),
                "messages": args.messages,
                "partitions": args.partitions,
                "produce_msg_per_s": round(args.messages / produce_s),
                "consume_msg_per_s": round(args.messages / consume_s),
            }
        ).decode()
    )


def _produce(config: dict[str, object], topic: str, count: int) -> float:
    producer = Producer(config | {"linger.ms": 5, "batch.num.messages": 10000})
    started = time.perf_counter()
    for i in range(count):
        value = orjson.dumps(
            {"event_id": f"e{i}", "user_id": f"u{i % 5000}", "item_id": f"i{i % 9000}"}
        )
        send_waiting(producer, topic, value, f"u{i % 5000}".encode())
    producer.flush()
    return time.perf_counter() - started


def _consume(config: dict[str, object], topic: str, count: int) -> float:
    consumer = Consumer(
        config
        | {
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    started = 0.0
    while seen < count:
        batch = consumer.consume(num_messages=10_000, timeout=1.0)
        if batch and not started:
            started = time.perf_counter()  # clock starts at the first record, after the group join
        seen += len(batch)
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


if __name__ == "__main__":
    main()
