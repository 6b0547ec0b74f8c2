"""Records from the files people have: CSV (any of `,` `;` tab, found by sniffing), JSON lines,
or a JSON array; times as ISO-8601 or epoch seconds or milliseconds. Every refusal names the
file's line and, where there is one, the column."""

from __future__ import annotations

import csv
import datetime
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import orjson

from recstream.core.errors import RecstreamError
from recstream.schemas.errors import InvalidMessageError

CSV_SUFFIXES = (".csv", ".tsv")
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_DELIMITERS = ",;\t"
TIME_FORMS = (
    "ISO-8601 (2024-06-01T14:30:00Z, an offset, or none: UTC), epoch seconds (1717252200, "
    "decimals allowed) or epoch milliseconds (1717252200000)"
)
# Epoch values below this are seconds (this many seconds is in the year 5138; as milliseconds
# it is 1973).
_SECONDS_BELOW = 100_000_000_000

Record = dict[str, Any] | InvalidMessageError


def event_time_ms(value: object) -> int:
    """Milliseconds since the epoch from any of TIME_FORMS; InvalidMessageError otherwise."""
    if isinstance(value, bool):
        raise _bad_time(value)
    if isinstance(value, int | float):
        return int(value * 1000 if abs(value) < _SECONDS_BELOW else value)
    if not isinstance(value, str) or not value.strip():
        raise _bad_time(value)
    text = value.strip()
    try:
        return event_time_ms(float(text)) if _is_number(text) else _iso_ms(text)
    except ValueError:
        raise _bad_time(value) from None


def _is_number(text: str) -> bool:
    return text.replace(".", "", 1).lstrip("-").isdigit()


def _iso_ms(text: str) -> int:
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


def _bad_time(value: object) -> InvalidMessageError:
    return InvalidMessageError(
        "bad_time", f"cannot read {value!r} as a time: use {TIME_FORMS}", field="event_time"
    )


MissingColumns = Callable[[list[str]], list[str]]


def read_records(path: Path, missing: MissingColumns) -> Iterator[tuple[int, Record]]:
    """(line number, record or why it was refused) for each record of the file. A file whose
    type cannot be read, or a CSV header without the columns `missing` asks for, raises
    RecstreamError before any record."""
    suffix = path.suffix.lower()
    with path.open(newline="", encoding="utf-8-sig") as handle:
        if suffix in CSV_SUFFIXES:
            yield from _csv_records(path, handle, missing)
        elif suffix in JSON_SUFFIXES:
            yield from _json_records(handle)
        else:
            raise RecstreamError(
                f"{path}: cannot tell how to read a {suffix or 'suffix-less'} file: name it .csv "
                "or .tsv (a header line, then a record a line), .jsonl (a JSON object a line) or "
                ".json (a JSON array of objects, or JSON lines)"
            )


def _csv_records(
    path: Path, handle: TextIO, missing: MissingColumns
) -> Iterator[tuple[int, Record]]:
    sample = handle.read(64 * 1024)
    handle.seek(0)
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=CSV_DELIMITERS)
    except csv.Error:
        dialect = csv.excel_tab if path.suffix.lower() == ".tsv" else csv.excel
    reader = csv.DictReader(handle, dialect=dialect)
    columns = list(reader.fieldnames or [])
    absent = missing(columns)
    if absent:
        raise RecstreamError(
            f"{path}: the header, read with delimiter {dialect.delimiter!r}, has columns "
            f"{columns}; missing: {absent}"
        )
    for row in reader:
        yield reader.line_num, _from_csv(row)


def _from_csv(row: dict[str, str]) -> Record:
    record: dict[str, Any] = {}
    for key, text in row.items():
        if key is None:  # more values than header columns
            return InvalidMessageError("schema_violation", "more values than header columns")
        if text is None or text == "":
            continue
        try:
            record.update(_csv_value(key, text))
        except InvalidMessageError as error:
            return error
    return record


def _csv_value(key: str, text: str) -> dict[str, Any]:
    if key == "tags":
        return {key: [tag for tag in text.split("|") if tag]}
    if key == "available":
        return {key: text.strip().lower() in ("1", "true", "yes")}
    if key.startswith("attributes."):
        return {"attributes": {key.split(".", 1)[1]: text}}
    if key == "event_time":
        return {key: event_time_ms(text)}
    if key == "value":
        try:
            return {key: float(text)}
        except ValueError:
            raise InvalidMessageError(
                "schema_violation", f"{text!r} is not a number", field="value"
            ) from None
    return {key: text}


def _json_records(handle: TextIO) -> Iterator[tuple[int, Record]]:
    text = handle.read()
    if text.lstrip().startswith("["):
        yield from _json_array(text)
        return
    for number, line in enumerate(io.StringIO(text), start=1):
        if line.strip():
            yield number, _one_object(line)


def _json_array(text: str) -> Iterator[tuple[int, Record]]:
    try:
        items = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        yield error.lineno, InvalidMessageError("undecodable", f"not a JSON array: {error.msg}")
        return
    for number, item in enumerate(items, start=1):  # numbered by position in the array
        yield number, _timed(item) if isinstance(item, dict) else _not_an_object(item)


def _one_object(line: str) -> Record:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        return InvalidMessageError("undecodable", str(error))
    return _timed(record) if isinstance(record, dict) else _not_an_object(record)


def _timed(record: dict[str, Any]) -> Record:
    """The record with its event_time (if any) in milliseconds."""
    if "event_time" not in record:
        return record
    try:
        return record | {"event_time": event_time_ms(record["event_time"])}
    except InvalidMessageError as error:
        return error


def _not_an_object(value: object) -> InvalidMessageError:
    return InvalidMessageError("undecodable", f"expected a JSON object, got {type(value).__name__}")
