"""InteractionEvent and CatalogEvent: JSON (orjson) on the wire, validated against the checked-in
JSON Schemas (compiled once by fastjsonschema), decoded into slotted dataclasses (CatalogEvent
frozen; InteractionEvent not, for speed, but never changed once decoded)."""

from __future__ import annotations

import itertools
import json
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

import fastjsonschema
import orjson

from recstream.schemas.errors import InvalidMessageError

SCHEMA_VERSION: Final = 1
MAX_MESSAGE_BYTES: Final = 64 * 1024
EVENT_TYPES: Final = (
    "view",
    "click",
    "add_to_cart",
    "purchase",
    "like",
    "dislike",
    "skip",
    "rating",
)
_SCHEMA_DIR = Path(__file__).parent
_SIZE_RULES = frozenset({"maxLength", "maxItems", "maxProperties"})
_ID = re.compile(r"[A-Za-z0-9_.:@/+=-]{1,128}")
_EVENT_TYPE_SET = frozenset(EVENT_TYPES)
_FAST_KEYS = frozenset(
    {
        "schema_version",
        "event_id",
        "user_id",
        "item_id",
        "event_type",
        "event_time",
        "value",
        "session_id",
    }
)
_MAX_TIME_MS = 32_503_680_000_000

Validator = Callable[[Any], Any]


def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema document for a message name such as `interaction_event`."""
    schema: dict[str, Any] = json.loads((_SCHEMA_DIR / f"{name}.schema.json").read_text())
    return schema


def compile_schema(name: str) -> Validator:
    validator: Validator = fastjsonschema.compile(load_schema(name))
    return validator


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """Event times outside [earliest_ms, now + max_future_skew_ms] are refused as absurd."""

    earliest_ms: int = 631_152_000_000  # 1990-01-01
    max_future_skew_ms: int = 5 * 60 * 1000

    def check(self, event_time: int, now_ms: int) -> None:
        if event_time < self.earliest_ms:
            raise InvalidMessageError(
                "event_time_out_of_range", f"event_time {event_time} is before {self.earliest_ms}"
            )
        if event_time > now_ms + self.max_future_skew_ms:
            raise InvalidMessageError(
                "event_time_out_of_range",
                f"event_time {event_time} is more than {self.max_future_skew_ms} ms in the future",
            )


# Not frozen: the interaction processor builds one per event, and a frozen dataclass's
# __init__ (object.__setattr__ per field) cost four times a plain one's. Treat it as immutable.
@dataclass(slots=True)
class InteractionEvent:
    event_id: str
    user_id: str
    item_id: str
    event_type: str
    event_time: int
    value: float | None = None
    session_id: str | None = None
    context: dict[str, Any] | None = None

    def to_json(self) -> bytes:
        return encode({"schema_version": SCHEMA_VERSION} | _present(self))


@dataclass(frozen=True, slots=True)
class CatalogEvent:
    event_id: str
    item_id: str
    op: str
    event_time: int
    title: str = ""
    description: str = ""
    category: str | None = None
    tags: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)
    available: bool = True

    def to_json(self) -> bytes:
        values = _present(self)
        values["tags"] = list(self.tags)
        return encode({"schema_version": SCHEMA_VERSION} | values)


def _present(event: InteractionEvent | CatalogEvent) -> dict[str, Any]:
    return {
        name: getattr(event, name) for name in event.__slots__ if getattr(event, name) is not None
    }


def encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message)


def parse_json_object(raw: bytes | None) -> dict[str, Any]:
    """Bytes to a JSON object with a supported schema_version, or InvalidMessageError."""
    if raw is None:
        raise InvalidMessageError("undecodable", "empty message (null value)")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidMessageError("oversized", f"{len(raw)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidMessageError("undecodable", f"not UTF-8 JSON: {error}") from None
    if not isinstance(message, dict):
        raise InvalidMessageError(
            "undecodable", f"expected a JSON object, got {type(message).__name__}"
        )
    version = message.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InvalidMessageError(
            "unknown_schema_version",
            f"schema_version {version!r} is not supported (expected {SCHEMA_VERSION})",
        )
    return message


def validate_against(validator: Validator, message: dict[str, Any]) -> None:
    try:
        validator(message)
    except fastjsonschema.JsonSchemaValueException as error:
        reason = "oversized" if error.rule in _SIZE_RULES else "schema_violation"
        raise InvalidMessageError(reason, _described(error), _field(error)) from None


def _described(error: fastjsonschema.JsonSchemaValueException) -> str:
    """The validator's message, with the fields a `required` rule found missing named."""
    if error.rule == "required" and isinstance(error.value, dict):
        missing = [name for name in error.rule_definition if name not in error.value]
        return f"missing field(s) {', '.join(missing)}"
    return str(error.message)


def _field(error: fastjsonschema.JsonSchemaValueException) -> str | None:
    """The top-level field at fault (path ['data', field, ...]), if any."""
    path = error.path or []
    return str(path[1]) if len(path) > 1 else None


class EventDecoder:
    """Decodes raw Kafka values into events; a refusal is an InvalidMessageError with a reason."""

    def __init__(self, bounds: TimeBounds | None = None) -> None:
        self.bounds = bounds or TimeBounds()
        self._interaction = compile_schema("interaction_event")
        self._catalog = compile_schema("catalog_event")

    def interaction(self, raw: bytes | None, now_ms: int) -> InteractionEvent:
        message = parse_json_object(raw)
        # The hot path: a plain-Python check that accepts only messages the schema accepts
        # (tests/unit/test_events.py holds it to that); anything else gets the full validator.
        if not _plainly_valid_interaction(message):
            validate_against(self._interaction, message)
        self.bounds.check(message["event_time"], now_ms)
        return InteractionEvent(  # positional: keywords cost more, once per event
            message["event_id"],
            message["user_id"],
            message["item_id"],
            message["event_type"],
            message["event_time"],
            message.get("value"),
            message.get("session_id"),
            message.get("context"),
        )

    def interactions(
        self, raws: Sequence[bytes | None], now_ms: int
    ) -> list[InteractionEvent] | None:
        """A batch of raw values decoded at once, when every one of them passes the checks of
        `interaction`'s fast path (the usual batch), done a column at a time; None when any
        does not. The caller then decodes them one by one, which gives each refusal its reason.
        Per event this costs about half of `interaction` (docs/benchmarks.md)."""
        if None in raws:
            return None
        present = cast(Sequence[bytes], raws)
        if max(map(len, present), default=0) > MAX_MESSAGE_BYTES:
            return None
        try:
            messages = list(map(orjson.loads, present))
        except orjson.JSONDecodeError:
            return None
        if not messages:
            return []
        if set(map(type, messages)) != {dict} or not all(map(_FAST_KEYS.issuperset, messages)):
            return None
        try:
            columns = [list(map(_GET[key], messages)) for key in _REQUIRED_ORDER]
        except KeyError:  # a required key missing
            return None
        versions, event_ids, user_ids, item_ids, event_types, times = columns
        if not (
            _all_of_type(versions, int)
            and set(versions) == {SCHEMA_VERSION}
            and all(_all_of_type(ids, str) for ids in (event_ids, user_ids, item_ids))
            and _all_ids(event_ids)
            and _all_repeated_ids(user_ids)
            and _all_repeated_ids(item_ids)
            and _all_of_type(event_types, str)
            and set(event_types) <= _EVENT_TYPE_SET
            and _all_of_type(times, int)
            and min(times) >= max(0, self.bounds.earliest_ms)
            and max(times) <= min(_MAX_TIME_MS, now_ms + self.bounds.max_future_skew_ms)
        ):
            return None
        values = _plain_values(messages, event_types)
        sessions = _plain_sessions(messages)
        if values is None or sessions is None:
            return None
        return list(
            map(
                InteractionEvent,
                event_ids,
                user_ids,
                item_ids,
                event_types,
                times,
                values,
                sessions,
            )
        )

    def catalog(self, raw: bytes | None, now_ms: int) -> CatalogEvent:
        message = parse_json_object(raw)
        validate_against(self._catalog, message)
        self.bounds.check(message["event_time"], now_ms)
        return CatalogEvent(
            event_id=message["event_id"],
            item_id=message["item_id"],
            op=message["op"],
            event_time=message["event_time"],
            title=message.get("title", ""),
            description=message.get("description", ""),
            category=message.get("category"),
            tags=tuple(message.get("tags", ())),
            attributes=message.get("attributes", {}),
            available=message.get("available", True),
        )


_KNOWN_IDS: set[str] = set()  # user and item ids that passed the pattern (they repeat a lot)
_KNOWN_IDS_LIMIT = 200_000


def _is_id(value: object) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def _is_repeated_id(value: object) -> bool:
    """_is_id, remembering the ids that passed: a set look-up is cheaper than the pattern."""
    if type(value) is not str:
        return False
    if value in _KNOWN_IDS:
        return True
    if _ID.fullmatch(value) is None:
        return False
    if len(_KNOWN_IDS) >= _KNOWN_IDS_LIMIT:
        _KNOWN_IDS.clear()
    _KNOWN_IDS.add(value)
    return True


_REQUIRED_ORDER = ("schema_version", "event_id", "user_id", "item_id", "event_type", "event_time")
_GET = {key: operator.itemgetter(key) for key in _FAST_KEYS}
_ID_LINES = re.compile(r"[A-Za-z0-9_.:@/+=-]{1,128}(?:\n[A-Za-z0-9_.:@/+=-]{1,128})*")


def _count_with(key: str, messages: list[dict[str, Any]]) -> int:
    return sum(map(operator.contains, messages, itertools.repeat(key)))


def _all_of_type(column: list[Any], kind: type) -> bool:
    return set(map(type, column)) == {kind}  # exact type: a bool is no int here


def _all_ids(ids: list[str]) -> bool:
    """Every string matches the id pattern: one match over all of them, one per line (the
    count of line breaks rules out an id that holds one)."""
    joined = "\n".join(ids)
    return joined.count("\n") == len(ids) - 1 and _ID_LINES.fullmatch(joined) is not None


def _all_repeated_ids(ids: list[str]) -> bool:
    """_all_ids, remembering the ids that passed (as `_is_repeated_id`)."""
    new = set(ids).difference(_KNOWN_IDS)
    if new and not _all_ids(list(new)):
        return False
    if len(_KNOWN_IDS) + len(new) > _KNOWN_IDS_LIMIT:
        _KNOWN_IDS.clear()
    _KNOWN_IDS.update(new)
    return True


def _plain_values(
    messages: list[dict[str, Any]], event_types: list[str]
) -> list[float | None] | None:
    """Each message's value (None where it has none), when every value given is a number in
    range and every rating has one; else None."""
    if _count_with("value", messages) == 0:  # the usual case, checked in C
        return None if "rating" in event_types else [None] * len(messages)
    if "rating" in event_types and any(
        "value" not in message
        for message, kind in zip(messages, event_types, strict=True)
        if kind == "rating"
    ):
        return None
    values = [message.get("value") for message in messages]
    given = [message["value"] for message in messages if "value" in message]
    if given and not (
        set(map(type, given)) <= {int, float} and min(given) >= -1e6 and max(given) <= 1e6
    ):
        return None
    return values


def _plain_sessions(messages: list[dict[str, Any]]) -> list[str | None] | None:
    """Each message's session id (None where it has none), when every one given is an id."""
    if _count_with("session_id", messages) == 0:
        return [None] * len(messages)
    given = [message["session_id"] for message in messages if "session_id" in message]
    if given and not (_all_of_type(given, str) and _all_ids(given)):
        return None
    return [message.get("session_id") for message in messages]


def _is_number(value: object, low: float, high: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high


def _plainly_valid_interaction(message: dict[str, Any]) -> bool:
    """True only for messages that certainly match interaction_event.schema.json."""
    value = message.get("value")
    version = message.get("schema_version")
    return (
        type(version) is int
        and version == SCHEMA_VERSION
        and message.keys() <= _FAST_KEYS
        and _is_id(message.get("event_id"))
        and _is_repeated_id(message.get("user_id"))
        and _is_repeated_id(message.get("item_id"))
        and isinstance(message.get("event_type"), str)
        and message["event_type"] in _EVENT_TYPE_SET
        and isinstance(message.get("event_time"), int)
        and _is_number(message["event_time"], 0, _MAX_TIME_MS)
        and ("session_id" not in message or _is_id(message["session_id"]))
        and (value is None if "value" not in message else _is_number(value, -1e6, 1e6))
        and (message["event_type"] != "rating" or "value" in message)
    )
