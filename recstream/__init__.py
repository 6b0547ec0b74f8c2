"""recstream: a streaming, event-driven, real-time recommender.

The SDK, importable from here: `from recstream import RecClient, InteractionEvent`.
`RecClient` / `AsyncRecClient` ask for recommendations and publish events (they validate an
event before sending it); `load_settings` reads the RECSTREAM_* settings they need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Loaded on first use: importing a module of recstream does not load the SDK's clients.
_EXPORTS = {
    "RecClient": "recstream.consumers.client",
    "AsyncRecClient": "recstream.consumers.client",
    "RequestTimeoutError": "recstream.consumers.errors",
    "InteractionEvent": "recstream.schemas.events",
    "CatalogEvent": "recstream.schemas.events",
    "RecommendRequest": "recstream.schemas.requests",
    "RecommendResponse": "recstream.schemas.requests",
    "InvalidMessageError": "recstream.schemas.errors",
    "load_settings": "recstream.core.settings",
}
__all__ = [
    "AsyncRecClient",
    "CatalogEvent",
    "InteractionEvent",
    "InvalidMessageError",
    "RecClient",
    "RecommendRequest",
    "RecommendResponse",
    "RequestTimeoutError",
    "__version__",
    "load_settings",
]

if TYPE_CHECKING:
    from recstream.consumers.client import AsyncRecClient, RecClient
    from recstream.consumers.errors import RequestTimeoutError
    from recstream.core.settings import load_settings
    from recstream.schemas.errors import InvalidMessageError
    from recstream.schemas.events import CatalogEvent, InteractionEvent
    from recstream.schemas.requests import RecommendRequest, RecommendResponse


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'recstream' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
