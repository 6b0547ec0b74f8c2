"""InteractionEvent and CatalogEvent: JSON (orjson) on the wire, validated against the checked-in
JSON Schemas (compiled once by fastjsonschema), decoded into slotted dataclasses (CatalogEvent
frozen; InteractionEvent not, for speed, but never changed once decoded)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import fastjsonschema
import orjson

from recstream.errors import InvalidMessageError

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
        raise InvalidMessageError(reason, error.message) from None


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
