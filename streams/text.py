"""Item text and its content hash: what gets embedded, and how we know it did not change."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence

from recstream.schemas.events import CatalogEvent

_SPACES = re.compile(r"\s+")
# Attributes worth reading for meaning; the rest (prices, ids, flags) are payload only.
DEFAULT_TEXT_ATTRIBUTES = ("genre", "genres", "brand", "author", "artist", "cuisine", "style")


def normalise(text: str) -> str:
    """NFKC, one space between words, no leading or trailing space."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def item_text(event: CatalogEvent, attributes: Sequence[str] = DEFAULT_TEXT_ATTRIBUTES) -> str:
    """Title, category, tags, description and selected attributes, normalised, in that order."""
    parts = [event.title]
    if event.category:
        parts.append(f"Category: {event.category}.")
    if event.tags:
        parts.append("Tags: " + ", ".join(event.tags) + ".")
    for key in attributes:
        value = event.attributes.get(key)
        if value is not None and not isinstance(value, bool):
            parts.append(f"{key.capitalize()}: {value}.")
    if event.description:
        parts.append(event.description)
    return normalise(" ".join(part for part in parts if part))


def content_hash(text: str, model_id: str) -> str:
    """Same text and same model means the same vector: hash both."""
    return hashlib.sha256(f"{model_id}\x00{text}".encode()).hexdigest()[:32]
