"""A batch that keeps failing: retry it with back-off, then find the records that fail it.

Two kinds of failure need opposite answers. A store or broker that does not answer (an
outage) is nobody's record's fault: the batch is retried until it answers, and health reports
the role stuck meanwhile. A failure that the records cause (the same error on every try) would
stop the partition forever: after `max_attempts` tries the batch is split in halves, each half
applied on its own, and a failing half split again, until the single records that fail are
found. Those are dead-lettered with the error and the rest is applied, in order: a half applied
is stored before the next half starts, so every user's events still apply in their order.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
R = TypeVar("R")


class Stopped(Exception):  # noqa: N818 (not an error: the worker is shutting down)
    """The worker stopped while a batch was being retried: nothing of it is committed."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    first_delay_s: float = 0.5
    max_delay_s: float = 30.0


class PoisonIsolation(Generic[R]):
    """Applies record batches with retries and isolation (see the module's docstring).

    apply: applies and stores records (all of them, or raises having stored none of them);
    poisoned: dead-letters one record with the error that it causes;
    is_outage: whether an error is the infrastructure's;
    on_retry: called before each retry (for metrics and for dropping caches)."""

    def __init__(
        self,
        apply: Callable[[Sequence[R]], object],
        poisoned: Callable[[R, BaseException], None],
        is_outage: Callable[[BaseException], bool],
        stopping: threading.Event,
        policy: RetryPolicy | None = None,
        on_retry: Callable[[BaseException], None] = lambda _: None,
    ) -> None:
        self._apply = apply
        self._poisoned = poisoned
        self._is_outage = is_outage
        self._stopping = stopping
        self._policy = policy or RetryPolicy()
        self._on_retry = on_retry

    def apply(self, records: Sequence[R]) -> None:
        """Apply every record or dead-letter it; raises Stopped if the worker stops first."""
        error = self._until_data_failure(
            lambda: self._apply(records), f"batch of {len(records)}", self._policy.max_attempts
        )
        if error is not None:
            self._isolate(records, error)

    def run(self, step: Callable[[], object], what: str) -> None:
        """Run a step with the same retries (an outage without end); raise a failure that is
        not an outage once the attempts are spent."""
        error = self._until_data_failure(step, what, self._policy.max_attempts)
        if error is not None:
            raise error

    def _until_data_failure(
        self, step: Callable[[], object], what: str, attempts: int
    ) -> BaseException | None:
        """Run the step, retrying an outage without end and another failure `attempts` times
        in all; None once it succeeded, else the last failure."""
        delay = self._policy.first_delay_s
        failures = 0
        while True:
            try:
                step()
                return None
            except Exception as error:
                if self._stopping.is_set():
                    raise Stopped from error
                if not self._is_outage(error):
                    failures += 1
                    if failures >= attempts:
                        return error
                log.warning("%s failed (%s); retrying in %.1f s", what, error, delay)
                self._on_retry(error)
                self._stopping.wait(delay)
                delay = min(delay * 2, self._policy.max_delay_s)

    def _isolate(self, records: Sequence[R], error: BaseException) -> None:
        if len(records) == 1:
            log.error("record dead-lettered: it fails its batch every time (%s)", error)
            self._poisoned(records[0], error)
            return
        middle = len(records) // 2
        for half in (records[:middle], records[middle:]):
            # The batch failed max_attempts times already: one try per half tells which fails.
            failure = self._until_data_failure(partial(self._apply, half), "part", attempts=1)
            if failure is not None:
                self._on_retry(failure)
                self._isolate(half, failure)
