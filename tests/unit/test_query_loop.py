"""The query role's loop policy: one failed turn is logged and the loop goes on, but a fatal
Kafka client error (a fenced static member, seen in a staging run after a broker kill) ends the
role, so the worker exits for its process manager to start a fresh one."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import KafkaError, KafkaException

from recstream.consumers.query_worker import QueryWorker

pytestmark = pytest.mark.unit


class _Turns(QueryWorker):
    """The real `run` over scripted turns: each raises the next error; then it stops."""

    def __init__(self, errors: list[Exception]) -> None:  # no consumer, producer or pool
        self._stop = threading.Event()
        self._errors = errors
        self.closed = False

    def run_once(self, timeout_s: float = 0.05) -> int:
        if not self._errors:
            self._stop.set()
            return 0
        raise self._errors.pop(0)

    def close(self) -> None:
        self.closed = True


def test_a_failed_turn_is_survived_and_a_transient_kafka_error_too() -> None:
    turns = _Turns(
        [RuntimeError("one bad turn"), KafkaException(KafkaError(KafkaError._TRANSPORT))]
    )
    turns.run()
    assert turns.closed and not turns._errors


@pytest.mark.parametrize("code", [KafkaError._FATAL, KafkaError.FENCED_INSTANCE_ID])
def test_a_fatal_client_error_ends_the_role(code: int) -> None:
    turns = _Turns([RuntimeError("one bad turn"), KafkaException(KafkaError(code)), ValueError()])
    with pytest.raises(KafkaException):
        turns.run()
    assert turns.closed and len(turns._errors) == 1  # the turn after it never ran
