"""Which pipeline version answers which request (the pointer's rule, pure)."""

from __future__ import annotations

import pytest

from recstream.infra.stores.pipelines import Pointer

pytestmark = pytest.mark.unit


def test_without_a_switch_the_unversioned_pipeline_answers_everything() -> None:
    pointer = Pointer()
    assert pointer.owns("", 3, 0) and pointer.owns("", 0, 10**9)
    assert not pointer.owns("v2", 3, 0)


def test_during_a_switch_both_versions_answer_and_after_it_the_offsets_decide() -> None:
    switching = Pointer("", incoming="v2")
    assert switching.owns("", 0, 5) and switching.owns("v2", 0, 5)
    assert not switching.owns("v3", 0, 5)
    done = Pointer("v2", previous="", since={0: 100, 1: 7})
    assert done.owns("v2", 0, 100) and not done.owns("", 0, 100)
    assert done.owns("", 0, 99) and not done.owns("v2", 0, 99)
    assert done.owns("v2", 5, 0)  # a partition made after the switch: all the new version's
    assert not done.owns("v3", 1, 3)


def test_no_request_is_declined_by_both_versions_whichever_pointer_each_reads() -> None:
    """A worker reads the pointer after fetching its request; the switch reads the ends after
    its first SET. So a request at or past the ends was sent after the first SET, and every
    worker reads the switching pointer or the final one for it; one before them may meet any."""
    before = Pointer("")
    switching = Pointer("", incoming="v2")
    after = Pointer("v2", previous="", since={0: 50})
    for offset, pointers in ((49, (before, switching, after)), (50, (switching, after))):
        for old_read in pointers:
            for new_read in pointers:
                assert old_read.owns("", 0, offset) or new_read.owns("v2", 0, offset)


def test_the_pointer_survives_its_json() -> None:
    pointer = Pointer("v2", previous="", since={0: 100, 11: 3}, incoming=None)
    assert Pointer.from_json(pointer.to_json()) == pointer
