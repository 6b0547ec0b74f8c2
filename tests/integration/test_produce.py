"""`recstream produce`: files become validated, keyed events on the real broker."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer

from recstream.cli import main
from recstream.core.settings import Settings
from recstream.infra.clients import kafka_config
from tests.conftest import MakeTopic


def _read(settings: Settings, topic: str, count: int) -> list[tuple[bytes | None, dict]]:
    consumer = Consumer(
        kafka_config(settings)
        | {"group.id": f"{topic}-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    out: list[tuple[bytes | None, dict]] = []
    deadline = time.monotonic() + 20
    while len(out) < count and time.monotonic() < deadline:
        for message in consumer.consume(count, 0.5):
            if message.error() is None:
                out.append((message.key(), orjson.loads(message.value())))
    consumer.close()
    return out


def test_jsonl_interactions_are_completed_validated_and_keyed_by_user(
    infra: Settings,
    unique: str,
    make_topic: MakeTopic,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = make_topic(unique)
    monkeypatch.setenv("RECSTREAM_TOPIC_INTERACTIONS", topic)
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"user_id": "u1", "item_id": "i1", "event_type": "click", "event_time": 1700000000000}\n'
        '{"user_id": "u2", "item_id": "i2", "event_type": "teleport"}\n'
        "not json\n"
        '{"user_id": "u1", "item_id": "i3", "event_type": "rating", "value": 4.5}\n'
    )
    assert main(["produce", "interactions", str(path), "--quiet"]) == 1  # invalid lines: exit 1
    captured = capsys.readouterr()
    assert "events.jsonl:2: column event_type: not sent: schema_violation" in captured.err
    assert "events.jsonl:3: not sent: undecodable" in captured.err
    assert "sent 2, invalid 2, failed 0" in captured.out
    records = _read(infra, topic, 2)
    assert [key for key, _ in records] == [b"u1", b"u1"]
    first, second = (value for _, value in records)
    assert first["schema_version"] == 1 and first["event_time"] == 1700000000000
    assert first["event_id"].startswith("i-") and first["event_id"] != second["event_id"]
    assert second["event_time"] == int(path.stat().st_mtime * 1000)  # no time given: the file's
    # The same record always gets the same id and time, so re-publishing a file is a
    # recognisable replay, also for records that had no time.
    assert main(["produce", "interactions", str(path), "--quiet"]) == 1
    again = _read(infra, topic, 4)
    assert [value for _, value in again[2:]] == [first, second]


def test_csv_catalog_with_tags_availability_and_attributes(
    infra: Settings,
    unique: str,
    make_topic: MakeTopic,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = make_topic(unique)
    monkeypatch.setenv("RECSTREAM_TOPIC_CATALOG", topic)
    path = tmp_path / "items.csv"
    path.write_text(
        "item_id,title,category,tags,available,attributes.genres,event_time\n"
        "m1,Toy Story,Animation,pixar|kids,true,Comedy,1700000000000\n"
        "m2,Heat,Crime,,false,,1700000000000\n"
    )
    assert main(["produce", "catalog", str(path), "--quiet"]) == 0
    records = dict(_read(infra, topic, 2))
    assert records[b"m1"]["tags"] == ["pixar", "kids"]
    assert records[b"m1"]["attributes"] == {"genres": "Comedy"}
    assert records[b"m1"]["op"] == "upsert" and records[b"m1"]["available"] is True
    assert records[b"m2"]["available"] is False and "tags" not in records[b"m2"]
