"""The worker's process-wide tuning."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from recstream.worker import GC_THRESHOLDS, fewer_garbage_collections


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_the_cycle_collector_runs_less_often_but_still_runs() -> None:
    gc.set_threshold(700, 10, 10)
    fewer_garbage_collections()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] > 700 and gc.isenabled()
    before = gc.get_stats()[0]["collections"]
    kept = [[] for _ in range(3 * GC_THRESHOLDS[0])]  # net container allocations count
    assert gc.get_stats()[0]["collections"] > before
    del kept
