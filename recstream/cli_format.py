"""Human-readable output of the CLI."""

from __future__ import annotations

from recstream.schemas.requests import RecommendResponse


def format_response(response: RecommendResponse) -> str:
    """A readable table: rank, title, score, reasons."""
    head = f"{response.status} ({response.strategy or '-'}), {len(response.items)} items"
    if response.error:
        head += f": {response.error}"
    lines = [head]
    for rank, item in enumerate(response.items, start=1):
        title = (item.title or item.item_id)[:48]
        lines.append(f"{rank:>3}. {title:<48} {item.score:6.3f}  {'; '.join(item.reasons)}")
    return "\n".join(lines)
