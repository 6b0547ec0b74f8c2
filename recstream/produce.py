"""`recstream produce catalog|interactions FILE`: publish a CSV or JSON file as events.

Each record (recstream.records reads the file) is completed (schema_version; event_time = the
file's modification time when absent; event_id derived from the record, and from its line when
its time was filled in, so re-publishing an unchanged file is recognised as a replay), validated
against the contract, and published keyed by user_id / item_id. Invalid records are reported
with their line number and column and not sent (unless --no-validate, which exists to exercise
the dead-letter path).
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from tqdm import tqdm

from recstream.core.errors import RecstreamError
from recstream.records import read_records
from recstream.schemas.errors import InvalidMessageError
from recstream.schemas.events import SCHEMA_VERSION, EventDecoder

KINDS = {"catalog": "item_id", "interactions": "user_id"}
FILLED_IN = frozenset({"event_id", "event_time", "op"})  # when a record has none (`complete`)
# Columns a CSV file must have (the rest of each contract is optional or filled in); a catalog
# file with an `op` column may hold deletes, which need no title.
REQUIRED_COLUMNS = {
    "catalog": ("item_id", "title"),
    "interactions": ("user_id", "item_id", "event_type"),
}


def missing_columns(kind: str, columns: list[str]) -> list[str]:
    required = REQUIRED_COLUMNS[kind]
    if kind == "catalog" and "op" in columns:
        required = ("item_id",)
    return [name for name in required if name not in columns]


FLUSH_TIMEOUT_S = 60.0


@dataclass
class ProduceReport:
    sent: int = 0
    invalid: int = 0
    failed: int = 0
    # Per partition, the offset after the last record delivered (what a consumer group that
    # has applied all of them has committed).
    ends: dict[int, int] = field(default_factory=dict)


def complete(record: dict[str, Any], kind: str, file_time_ms: int, line: int) -> dict[str, Any]:
    """Fill schema_version, op, event_time (the file's time) and event_id when absent. The id
    is a digest of the record: publishing the same file again gives every event the same id
    and time, so the processor recognises a replay. Two equal lines without a time are two
    events (their line numbers differ); two equal lines with a time are one."""
    record = {"schema_version": SCHEMA_VERSION} | record
    if kind == "catalog":
        record.setdefault("op", "upsert")
    identity = record
    if "event_time" not in record:
        record["event_time"] = file_time_ms
        identity = record | {"_line": line}
    if "event_id" not in record:
        digest = hashlib.sha1(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()
        record["event_id"] = f"{kind[0]}-{digest[:20]}"
    return record


def produce_file(
    kafka_config: dict[str, Any],
    topic: str,
    kind: str,
    path: Path,
    validate: bool = True,
    progress: bool = True,
) -> ProduceReport:
    if kind not in KINDS:
        raise RecstreamError(f"unknown kind {kind!r}; choose from {sorted(KINDS)}")
    if not path.is_file():
        raise RecstreamError(f"no such file: {path}")
    decoder = EventDecoder()
    report = ProduceReport()
    producer = Producer(kafka_config | {"linger.ms": 10, "enable.idempotence": True})

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            report.failed += 1
            return
        partition, offset = message.partition() or 0, message.offset() or 0
        report.ends[partition] = max(report.ends.get(partition, 0), offset + 1)

    now = int(time.time() * 1000)
    file_time = int(path.stat().st_mtime * 1000)
    for number, record in tqdm(
        read_records(path, partial(missing_columns, kind)),
        desc=f"{kind} -> {topic}",
        unit=" ev",
        disable=not progress,
        mininterval=0.5,
    ):
        if isinstance(record, InvalidMessageError):
            _report_invalid(path, number, record, report)
            continue
        value = orjson.dumps(complete(record, kind, file_time, number))
        if validate:
            try:
                _decode(decoder, kind, value, now)
            except InvalidMessageError as error:
                _report_invalid(path, number, error, report)
                continue
        key = str(record.get(KINDS[kind], "")).encode() or None
        send_waiting(producer, topic, value, key, delivered)
        producer.poll(0)
        report.sent += 1
    report.failed += producer.flush(FLUSH_TIMEOUT_S)  # still undelivered: failed
    return report


def wait_applied(
    kafka_config: dict[str, Any], topic: str, group: str, ends: dict[int, int], timeout_s: float
) -> bool:
    """Wait until the consumer group has committed past `ends` on the topic: the worker has
    applied everything sent. False after timeout_s."""
    consumer = Consumer(kafka_config | {"group.id": group, "enable.auto.commit": False})
    parts = [TopicPartition(topic, partition) for partition in ends]
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            committed = consumer.committed(parts, timeout=10)
            if all(part.offset >= ends[part.partition] for part in committed):
                return True
            time.sleep(0.5)
        return False
    finally:
        consumer.close()


def _decode(decoder: EventDecoder, kind: str, value: bytes, now: int) -> None:
    if kind == "catalog":
        decoder.catalog(value, now)
    else:
        decoder.interaction(value, now)


def _report_invalid(
    path: Path, number: int, error: InvalidMessageError, report: ProduceReport
) -> None:
    where = f"{path}:{number}" if number else str(path)
    column = f" column {error.field}:" if error.field else ""
    print(f"{where}:{column} not sent: {error}", file=sys.stderr)
    report.invalid += 1


def send_waiting(
    producer: Producer, topic: str, value: bytes, key: bytes | None, on_delivery: Any = None
) -> None:
    """produce(), waiting for room while the producer's local queue is full (BufferError)."""
    options = {"key": key} if on_delivery is None else {"key": key, "on_delivery": on_delivery}
    while True:
        try:
            producer.produce(topic, value, **options)
            return
        except BufferError:  # local queue full: let deliveries drain
            producer.poll(0.1)
