"""The base of every error recstream raises on purpose, and the settings' error. Each layer
keeps its own errors beside it (schemas/errors.py, infra/errors.py, consumers/errors.py), all
derived from RecstreamError, so a caller can catch one layer's errors or all of them."""

from __future__ import annotations


class RecstreamError(Exception):
    """Base of every error recstream raises on purpose."""


class SettingsError(RecstreamError):
    """A RECSTREAM_* variable is unknown or has an invalid value."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n  " + "\n  ".join(problems))
