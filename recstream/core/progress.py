"""What `/health` knows of each role: that its thread is alive, that its loop turns, and that the
records it takes get committed. A role thread that died, or one holding records it has not
committed for longer than the stuck limit (a poison batch, a store that does not answer, commits
that keep failing), makes both health endpoints fail, so an orchestrator restarts or stops
routing to the process instead of trusting a process that only looks alive."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable

Clock = Callable[[], float]


class RoleProgress:
    """One role's liveness. `loops` says whether the role polls in a loop (then a loop that has
    not turned for the stuck limit is stuck too); an event-driven role (faust) is idle when no
    events come and only what it holds counts."""

    def __init__(self, role: str, loops: bool = True, clock: Clock = time.monotonic) -> None:
        self.role = role
        self._loops = loops
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[Hashable, float] = {}
        self._last_beat = clock()
        self._commit_failing_since: float | None = None
        self._death: str | None = None
        self._stopped = False

    def beat(self) -> None:
        """The loop turned."""
        self._last_beat = self._clock()

    def holding(self, what: Hashable) -> None:
        """Records (a batch, a request) were taken and are not committed yet."""
        with self._lock:
            self._held.setdefault(what, self._clock())

    def released(self, what: Hashable) -> None:
        """What was held is committed (or answered)."""
        with self._lock:
            self._held.pop(what, None)

    def commit_failed(self) -> None:
        with self._lock:
            if self._commit_failing_since is None:
                self._commit_failing_since = self._clock()

    def committed(self) -> None:
        with self._lock:
            self._commit_failing_since = None

    def died(self, error: BaseException) -> None:
        self._death = f"{type(error).__name__}: {error}"[:300]

    def stopped(self) -> None:
        """Ended on purpose (shutdown): not a failure."""
        self._stopped = True

    def problem(self, stuck_after_s: float) -> str | None:
        """Why the role is not healthy, or None."""
        if self._death is not None:
            return f"dead: {self._death}"
        if self._stopped:
            return None
        now = self._clock()
        with self._lock:
            oldest = min(self._held.values(), default=None)
            failing_since = self._commit_failing_since
        if oldest is not None and now - oldest > stuck_after_s:
            return f"stuck: holding uncommitted records for {now - oldest:.0f} s"
        if failing_since is not None and now - failing_since > stuck_after_s:
            return f"stuck: commits failing for {now - failing_since:.0f} s"
        if self._loops and now - self._last_beat > stuck_after_s:
            return f"stuck: its loop has not turned for {now - self._last_beat:.0f} s"
        return None


def run_role(progress: RoleProgress, run: Callable[[], None]) -> None:
    """Run a role's loop in this thread; if it ends by an exception, say so in its progress
    (health then fails) instead of dying silently."""
    try:
        run()
    except BaseException as error:
        progress.died(error)
        raise
    progress.stopped()
