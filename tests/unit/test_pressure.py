"""Requests in hand, as the interaction loop of the same process sees them."""

from __future__ import annotations

import threading

from recstream.core.pressure import QueryPressure


def test_busy_until_every_request_taken_is_answered_then_recently_active() -> None:
    pressure = QueryPressure()
    assert not pressure.busy() and not pressure.active_within(60.0)
    pressure.taken(2)
    assert pressure.busy() and not pressure.wait_idle(0.01)
    pressure.answered()
    assert pressure.busy()
    pressure.answered()
    assert not pressure.busy() and pressure.wait_idle(0.0)
    assert pressure.active_within(60.0)  # a steady stream: the next request is due
    assert not pressure.active_within(0.0)
    pressure.taken(0)
    assert not pressure.busy()


def test_a_waiting_loop_is_released_when_the_last_answer_leaves() -> None:
    pressure = QueryPressure()
    pressure.taken(1)
    released = threading.Event()

    def wait() -> None:
        if pressure.wait_idle(10.0):
            released.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert not released.wait(0.05)
    pressure.answered()
    waiter.join(10.0)
    assert released.is_set()
