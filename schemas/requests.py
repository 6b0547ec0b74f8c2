"""RecommendRequest and RecommendResponse: the query contract, validated like the events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from recstream.core.attributes import AttributeCondition
from recstream.schemas.events import (
    SCHEMA_VERSION,
    Validator,
    compile_schema,
    encode,
    parse_json_object,
    validate_against,
)

STATUSES = ("ok", "error", "overloaded", "expired")


_OPTIONAL_REQUEST_FIELDS = (
    "user_id",
    "item_id",
    "reply_to",
    "reply_partition",
    "deadline_ms",
    "max_per_category",
    "diversity",
)


@dataclass(frozen=True, slots=True)
class RecommendRequest:
    request_id: str
    k: int
    user_id: str | None = None
    item_id: str | None = None
    categories_in: tuple[str, ...] = ()
    categories_out: tuple[str, ...] = ()
    available_only: bool = True
    exclude: tuple[str, ...] = ()
    diversity: float | None = None  # MMR lambda; None: the worker's RECSTREAM_DIVERSITY
    preference_text: str | None = None
    preference_categories: tuple[str, ...] = ()
    reply_to: str | None = None
    reply_partition: int | None = None
    deadline_ms: int | None = None
    max_per_category: int | None = None  # None: the worker's default rule
    trending: bool = False  # cold-start and top-up items by velocity (docs/serving.md)
    tags_any: tuple[str, ...] = ()  # items with at least one of these tags
    attributes: tuple[AttributeCondition, ...] = ()  # on filterable attributes (docs/serving.md)

    def to_json(self) -> bytes:
        message: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "request_id": self.request_id,
            "k": self.k,
        }
        for name in _OPTIONAL_REQUEST_FIELDS:
            if getattr(self, name) is not None:
                message[name] = getattr(self, name)
        filters: dict[str, Any] = {"available_only": self.available_only}
        if self.categories_in:
            filters["categories_in"] = list(self.categories_in)
        if self.categories_out:
            filters["categories_out"] = list(self.categories_out)
        if self.tags_any:
            filters["tags_any"] = list(self.tags_any)
        if self.attributes:
            filters["attributes"] = {c.name: _condition_json(c) for c in self.attributes}
        message["filters"] = filters
        if self.exclude:
            message["exclude"] = list(self.exclude)
        if self.trending:
            message["trending"] = True
        preferences: dict[str, Any] = {}
        if self.preference_text:
            preferences["text"] = self.preference_text
        if self.preference_categories:
            preferences["categories"] = list(self.preference_categories)
        if preferences:
            message["preferences"] = preferences
        return encode(message)


@dataclass(frozen=True, slots=True)
class RecommendedItem:
    item_id: str
    score: float
    reasons: tuple[str, ...]
    title: str = ""
    category: str | None = None


@dataclass(frozen=True, slots=True)
class RecommendResponse:
    request_id: str
    status: str
    items: tuple[RecommendedItem, ...] = ()
    error: str | None = None
    model_version: str = ""
    strategy: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> bytes:
        message: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "request_id": self.request_id,
            "status": self.status,
            "items": [
                {
                    "item_id": i.item_id,
                    "score": round(i.score, 6),
                    "reasons": list(i.reasons),
                    "title": i.title,
                    "category": i.category,
                }
                for i in self.items
            ],
            "model_version": self.model_version,
            "timings_ms": self.timings_ms,
        }
        if self.error is not None:
            message["error"] = self.error
        if self.strategy is not None:
            message["strategy"] = self.strategy
        return encode(message)


class RequestCodec:
    """Decodes requests (an InvalidMessageError names what is wrong) and responses."""

    def __init__(self) -> None:
        self._request: Validator = compile_schema("recommend_request")
        self._response: Validator = compile_schema("recommend_response")

    def request(self, raw: bytes | None) -> RecommendRequest:
        message = parse_json_object(raw)
        validate_against(self._request, message)
        filters = message.get("filters", {})
        preferences = message.get("preferences", {})
        return RecommendRequest(
            request_id=message["request_id"],
            k=message["k"],
            user_id=message.get("user_id"),
            item_id=message.get("item_id"),
            categories_in=tuple(filters.get("categories_in", ())),
            categories_out=tuple(filters.get("categories_out", ())),
            available_only=filters.get("available_only", True),
            exclude=tuple(message.get("exclude", ())),
            diversity=_optional_float(message.get("diversity")),
            preference_text=preferences.get("text"),
            preference_categories=tuple(preferences.get("categories", ())),
            reply_to=message.get("reply_to"),
            reply_partition=message.get("reply_partition"),
            deadline_ms=message.get("deadline_ms"),
            max_per_category=message.get("max_per_category"),
            trending=message.get("trending", False),
            tags_any=tuple(filters.get("tags_any", ())),
            attributes=_conditions(filters.get("attributes", {})),
        )

    def response(self, raw: bytes | None) -> RecommendResponse:
        message = parse_json_object(raw)
        validate_against(self._response, message)
        items = tuple(
            RecommendedItem(
                i["item_id"],
                float(i["score"]),
                tuple(i["reasons"]),
                i.get("title", ""),
                i.get("category"),
            )
            for i in message["items"]
        )
        return RecommendResponse(
            message["request_id"],
            message["status"],
            items,
            message.get("error"),
            message.get("model_version", ""),
            message.get("strategy"),
            message.get("timings_ms", {}),
        )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _condition_json(condition: AttributeCondition) -> dict[str, Any]:
    if not condition.is_range:
        return {"any": list(condition.any)}
    bounds = {"gt": condition.gt, "gte": condition.gte, "lt": condition.lt, "lte": condition.lte}
    return {name: value for name, value in bounds.items() if value is not None}


def _conditions(attributes: dict[str, dict[str, Any]]) -> tuple[AttributeCondition, ...]:
    return tuple(
        AttributeCondition(
            name,
            any=tuple(spec.get("any", ())),
            gt=_optional_float(spec.get("gt")),
            gte=_optional_float(spec.get("gte")),
            lt=_optional_float(spec.get("lt")),
            lte=_optional_float(spec.get("lte")),
        )
        for name, spec in sorted(attributes.items())
    )
