"""Errors of the wire format: a message that cannot be accepted."""

from __future__ import annotations

from recstream.core.errors import RecstreamError


class InvalidMessageError(RecstreamError):
    """A message cannot be accepted; `reason` is a stable code for DLQ headers and metrics,
    `field` the field (a file's column) at fault where one is."""

    def __init__(self, reason: str, detail: str, field: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.field = field
        super().__init__(f"{reason}: {detail}")
