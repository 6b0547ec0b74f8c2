"""Filters on item attributes: which attributes are filterable (and so indexed in the vector
index), their values typed on the way in, and one request condition per attribute.

An operator declares the filterable attributes, name -> "keyword" or "number"
(`RECSTREAM_FILTER_ATTRIBUTES`); each becomes a payload index on `attributes.<name>` in every
Qdrant collection, so a filtered search runs inside the index, before scoring. A request may
filter on declared attributes only: a filter on any other would scan every payload.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

AttributeType = Literal["keyword", "number"]
ATTRIBUTE_TYPES: tuple[AttributeType, ...] = ("keyword", "number")


def payload_key(name: str) -> str:
    """Where an attribute sits in an item's payload (the key its index and filters name)."""
    return f"attributes.{name}"


@dataclass(frozen=True, slots=True)
class AttributeCondition:
    """One attribute's condition: equal to one of `any` (keyword), or within the bounds
    (number; any of gt/gte/lt/lte, all that are set must hold)."""

    name: str
    any: tuple[str, ...] = ()
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    @property
    def is_range(self) -> bool:
        return not self.any

    def holds_for(self, value: Any) -> bool:
        """Whether an item's (typed) attribute value meets the condition; a missing value never
        does."""
        if value is None or isinstance(value, bool):
            return False
        if not self.is_range:
            return isinstance(value, str) and value in self.any
        if not isinstance(value, int | float):
            return False
        return (
            (self.gt is None or value > self.gt)
            and (self.gte is None or value >= self.gte)
            and (self.lt is None or value < self.lt)
            and (self.lte is None or value <= self.lte)
        )


def admits(
    attributes: Mapping[str, Any],
    tags: Sequence[str],
    tags_any: Sequence[str],
    conditions: Sequence[AttributeCondition],
) -> bool:
    """The attribute and tag conditions of a filter, for an item that did not come from a
    filtered search (co-visited and popular items)."""
    if tags_any and not set(tags_any).intersection(tags):
        return False
    return all(c.holds_for(attributes.get(c.name)) for c in conditions)


def check_filterable(
    conditions: Sequence[AttributeCondition], declared: Mapping[str, AttributeType]
) -> None:
    """Refuse (ValueError, naming it) a condition on an undeclared attribute, or one whose kind
    does not fit the attribute's type."""
    for condition in conditions:
        kind = declared.get(condition.name)
        if kind is None:
            known = ", ".join(sorted(declared)) or "none"
            raise ValueError(
                f"attribute {condition.name!r} is not filterable "
                f"(RECSTREAM_FILTER_ATTRIBUTES declares: {known})"
            )
        if condition.is_range != (kind == "number"):
            wanted = "a range (gt/gte/lt/lte)" if kind == "number" else "values (any)"
            raise ValueError(f"attribute {condition.name!r} is a {kind}: filter it by {wanted}")


def typed_attributes(
    attributes: Mapping[str, Any], declared: Mapping[str, AttributeType]
) -> dict[str, Any]:
    """An item's attributes with the declared ones typed as their index expects: a number
    (also from a numeric string, as CSV gives it) or a keyword string. Raises ValueError naming
    the attribute whose value cannot be typed."""
    typed = dict(attributes)
    for name, kind in declared.items():
        if name in typed:
            typed[name] = _typed(name, typed[name], kind)
    return typed


def _typed(name: str, value: Any, kind: AttributeType) -> Any:
    if kind == "keyword":
        if isinstance(value, bool):
            return "true" if value else "false"
        return value if isinstance(value, str) else _number_text(value)
    if isinstance(value, bool):
        raise ValueError(f"attribute {name!r} is a number, not {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"attribute {name!r} is a number, not {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"attribute {name!r} is a number, not {value!r}")
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


_WHERE = re.compile(r"\s*([A-Za-z0-9_-]{1,64})\s*(>=|<=|>|<|=)\s*(.+?)\s*")
_BOUNDS = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}


def parse_where(expressions: Sequence[str]) -> tuple[AttributeCondition, ...]:
    """Conditions from `name=a,b` (a keyword: one of the values) and `name>=x`, `name<y`
    (a number; bounds on one name add up), as the CLI's --where gives them. Raises ValueError
    naming an expression it cannot read."""
    conditions: dict[str, AttributeCondition] = {}
    for text in expressions:
        match = _WHERE.fullmatch(text)
        if match is None:
            raise ValueError(f"cannot read {text!r}: write name=a,b or name>=x (>, >=, <, <=)")
        name, operator, value = match.groups()
        current = conditions.get(name, AttributeCondition(name))
        if operator == "=":
            values = tuple(v.strip() for v in value.split(",") if v.strip())
            updated = replace(current, any=current.any + values)
        else:
            try:
                bound = float(value)
            except ValueError:
                raise ValueError(f"cannot read {text!r}: {value!r} is not a number") from None
            bounds: dict[str, Any] = {_BOUNDS[operator]: bound}
            updated = replace(current, **bounds)
        if updated.any and updated != replace(updated, gt=None, gte=None, lt=None, lte=None):
            raise ValueError(f"{name!r}: values (=) and bounds (<, >) cannot be mixed")
        conditions[name] = updated
    return tuple(conditions[name] for name in sorted(conditions))


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
