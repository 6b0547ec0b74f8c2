"""RoleProgress: what makes a role dead or stuck for /health."""

from __future__ import annotations

import pytest

from recstream.core.progress import RoleProgress, run_role


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_records_held_too_long_make_the_role_stuck_until_released() -> None:
    clock = Clock()
    progress = RoleProgress("interactions", clock=clock)
    progress.holding("batch-1")
    clock.now += 30
    progress.beat()
    assert progress.problem(stuck_after_s=60) is None
    clock.now += 31
    progress.beat()
    assert progress.problem(60) == "stuck: holding uncommitted records for 61 s"
    progress.released("batch-1")
    assert progress.problem(60) is None


def test_failing_commits_and_a_loop_that_does_not_turn_are_stuck() -> None:
    clock = Clock()
    progress = RoleProgress("interactions", clock=clock)
    progress.commit_failed()
    clock.now += 10
    progress.commit_failed()  # the first failure's time is kept
    clock.now += 55
    progress.beat()
    assert progress.problem(60) == "stuck: commits failing for 65 s"
    progress.committed()
    assert progress.problem(60) is None
    clock.now += 61
    assert progress.problem(60) == "stuck: its loop has not turned for 61 s"


def test_an_idle_event_driven_role_is_not_stuck() -> None:
    clock = Clock()
    progress = RoleProgress("catalog", loops=False, clock=clock)
    clock.now += 3600
    assert progress.problem(60) is None


def test_a_role_that_raised_is_dead_and_one_that_stopped_is_not() -> None:
    progress = RoleProgress("query")

    def boom() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run_role(progress, boom)
    assert progress.problem(60) == "dead: RuntimeError: boom"
    finished = RoleProgress("query", clock=Clock())
    run_role(finished, lambda: None)
    assert finished.problem(0.0) is None
