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


def test_a_worker_takes_a_static_member_id_from_its_host_and_metrics_port() -> None:
    import socket

    from recstream.compose import with_instance_id
    from recstream.core.settings import load_settings

    auto = with_instance_id(load_settings({"RECSTREAM_METRICS_PORT": "9470"}))
    assert auto.kafka_instance_id is not None
    assert auto.kafka_instance_id.endswith("-9470")
    assert socket.gethostname()[:10] in auto.kafka_instance_id
    given = load_settings({"RECSTREAM_KAFKA_INSTANCE_ID": "pod-3"})
    assert with_instance_id(given).kafka_instance_id == "pod-3"
    off = load_settings({"RECSTREAM_KAFKA_STATIC_MEMBERSHIP": "false"})
    assert with_instance_id(off).kafka_instance_id is None
    no_port = load_settings({"RECSTREAM_METRICS_PORT": "0"})
    assert with_instance_id(no_port).kafka_instance_id is None
