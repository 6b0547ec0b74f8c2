"""Files as people have them: delimiters, times, JSON arrays; refusals with line and column."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from recstream.core.errors import RecstreamError
from recstream.produce import missing_columns
from recstream.records import event_time_ms, read_records
from recstream.schemas.errors import InvalidMessageError

INTERACTIONS = partial(missing_columns, "interactions")
T = 1_717_252_200_000  # 2024-06-01T14:30:00Z


@pytest.mark.parametrize(
    "value",
    [
        "2024-06-01T14:30:00Z",
        "2024-06-01T16:30:00+02:00",
        "2024-06-01T14:30:00",  # no offset: UTC
        "2024-06-01 14:30:00",
        1_717_252_200,
        "1717252200",
        1_717_252_200.0,
        T,
        str(T),
    ],
)
def test_times_are_read_as_iso_8601_or_epoch_seconds_or_milliseconds(value: object) -> None:
    assert event_time_ms(value) == T


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01", "", True, None, [1]])
def test_a_time_that_cannot_be_read_names_the_forms_that_can(value: object) -> None:
    with pytest.raises(InvalidMessageError, match="ISO-8601") as refused:
        event_time_ms(value)
    assert refused.value.field == "event_time"


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_csv_delimiters_are_sniffed(tmp_path: Path, delimiter: str) -> None:
    path = tmp_path / "events.csv"
    rows = [["user_id", "item_id", "event_type", "event_time"], ["u1", "i1", "click", "1717252200"]]
    path.write_text("".join(delimiter.join(row) + "\n" for row in rows))
    assert list(read_records(path, INTERACTIONS)) == [
        (2, {"user_id": "u1", "item_id": "i1", "event_type": "click", "event_time": T})
    ]


def test_a_header_without_the_needed_columns_says_what_it_has(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("customer;product;action\nu1;i1;click\n")
    with pytest.raises(RecstreamError) as refused:
        list(read_records(path, INTERACTIONS))
    message = str(refused.value)
    assert "delimiter ';'" in message and "['customer', 'product', 'action']" in message
    assert "missing: ['user_id', 'item_id', 'event_type']" in message


def test_bad_values_are_refused_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "user_id,item_id,event_type,event_time,value\n"
        "u1,i1,rating,2024-06-01T14:30:00Z,4.5\n"
        "u1,i2,rating,not-a-time,4\n"
        "u1,i3,rating,2024-06-01T14:31:00Z,five\n"
    )
    found = list(read_records(path, INTERACTIONS))
    assert found[0] == (
        2,
        {"user_id": "u1", "item_id": "i1", "event_type": "rating", "event_time": T, "value": 4.5},
    )
    refusals = [(line, r.field, r.reason) for line, r in found[1:] if isinstance(r, Exception)]
    assert refusals == [(3, "event_time", "bad_time"), (4, "value", "schema_violation")]


def test_a_json_array_and_json_lines_are_both_read(tmp_path: Path) -> None:
    array = tmp_path / "events.json"
    array.write_text('[{"user_id": "u1", "event_time": "2024-06-01T14:30:00Z"}, 3]')
    records = list(read_records(array, INTERACTIONS))
    assert records[0] == (1, {"user_id": "u1", "event_time": T})
    assert isinstance(records[1][1], InvalidMessageError)
    lines = tmp_path / "events.jsonl"
    lines.write_text('{"user_id": "u1", "event_time": 1717252200}\n\n{"user_id": "u2"}\n')
    assert list(read_records(lines, INTERACTIONS)) == [
        (1, {"user_id": "u1", "event_time": T}),
        (3, {"user_id": "u2"}),
    ]


def test_a_file_of_unknown_type_is_refused_with_the_types_that_are_read(tmp_path: Path) -> None:
    path = tmp_path / "events.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(RecstreamError, match=r"\.csv.*\.jsonl.*\.json"):
        list(read_records(path, INTERACTIONS))
