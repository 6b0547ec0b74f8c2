"""Errors of the query side."""

from __future__ import annotations

from recstream.core.errors import RecstreamError


class RequestTimeoutError(RecstreamError):
    """No response arrived in time."""


class UnknownItemError(RecstreamError):
    """More-like-this for an item the index does not hold."""
