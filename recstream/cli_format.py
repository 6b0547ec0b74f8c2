"""The CLI's output: tables with headers for people (rich), JSON for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from recstream.schemas.events import load_schema
from recstream.schemas.requests import RecommendResponse


def print_response(response: RecommendResponse, as_json: bool = False) -> None:
    """The answer: its wire JSON, or a summary line and a table of the items."""
    if as_json:
        sys.stdout.write(response.to_json().decode() + "\n")
        return
    head = f"{response.status} ({response.strategy or '-'}), {len(response.items)} items"
    if response.error:
        head += f": {response.error}"
    console = Console(highlight=False, soft_wrap=False)
    console.print(head, markup=False)
    if not response.items:
        return
    table = Table(
        "rank",
        "item",
        "title",
        "score",
        "why",
        caption="in the order served: relevance traded against diversity (MMR), so a score "
        "may be below the next one's",
        caption_justify="left",
    )
    for rank, item in enumerate(response.items, start=1):
        table.add_row(
            str(rank), item.item_id, item.title or "", f"{item.score:.3f}", "; ".join(item.reasons)
        )
    console.print(table)


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    table = Table(*columns, title=title, title_justify="left")
    for row in rows:
        table.add_row(*row)
    Console(highlight=False).print(table)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def schema_fields(name: str, filled_in: frozenset[str] = frozenset()) -> str:
    """The fields of a message contract, for --help: whether each is required (or filled in
    when missing), its type and its meaning."""
    schema = load_schema(name)
    required = schema.get("required", [])
    lines = []
    for field, spec in schema["properties"].items():
        if field == "schema_version":
            continue
        kind = " | ".join(spec["enum"]) if "enum" in spec else spec.get("type", "id")
        need = (
            "filled in" if field in filled_in else "required" if field in required else "optional"
        )
        about = spec.get("description", "")
        lines.append(f"  {field:<14} {need:<10} {kind}{'  ' + about if about else ''}")
    return "\n".join(lines)
