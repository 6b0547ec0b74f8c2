"""Errors of the query side."""

from __future__ import annotations

from recstream.core.errors import RecstreamError


class RequestTimeoutError(RecstreamError):
    """No response arrived in time."""


class BadRequestError(RecstreamError):
    """A valid request that cannot be answered as asked: the response says why."""


class UnknownItemError(BadRequestError):
    """More-like-this for an item the index does not hold."""


class UnfilterableError(BadRequestError):
    """A filter on an attribute that is not declared filterable, or of the wrong kind."""
