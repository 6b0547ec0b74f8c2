"""Requests first: how the query worker tells the interaction loop of the same process that
requests are waiting for an answer.

In embedded mode one process hosts every role. The interaction loop is CPU-bound Python and
can take the whole interpreter, so during an ingest burst answers waited behind it (measured:
at 50 requests/s most answers were `overloaded`, docs/benchmarks.md). While requests are in
hand, the loop waits for them (up to a bound, so ingest never stops) and takes small batches;
the events wait in Kafka meanwhile, which is what Kafka is for.
"""

from __future__ import annotations

import threading
import time


class QueryPressure:
    """Requests taken by this process's query worker and not answered yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_hand = 0
        self._idle = threading.Event()
        self._idle.set()
        self._last_answer = float("-inf")  # time.monotonic()

    def taken(self, count: int) -> None:
        if count <= 0:
            return
        with self._lock:
            self._in_hand += count
            self._idle.clear()

    def answered(self) -> None:
        with self._lock:
            self._in_hand = max(0, self._in_hand - 1)
            self._last_answer = time.monotonic()
            if self._in_hand == 0:
                self._idle.set()

    def busy(self) -> bool:
        return not self._idle.is_set()

    def active_within(self, seconds: float) -> bool:
        """A request in hand now, or one answered less than `seconds` ago: between two requests
        of a steady stream there is no request in hand, and the next one is due."""
        return self.busy() or time.monotonic() - self._last_answer < seconds

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is in hand, at most timeout_s; True if none is."""
        return self._idle.wait(timeout_s)
