"""The batch write's payload cut by Redis Cluster slot (infra/stores/batch_write.py)."""

from __future__ import annotations

from typing import Any

from redis.crc import key_slot

from recstream.infra.stores.batch_write import SECTIONS, BatchWrite, split_by
from recstream.infra.stores.keys import KeySpace

KEYS = KeySpace("t")
USERS = [f"user{n}" for n in range(40)]


def _slot(key: str) -> int:
    return int(key_slot(key.encode()))


def _write() -> BatchWrite:
    return BatchWrite(
        rebase=[[KEYS.popularity(), "0.5"], [KEYS.category_popularity("films"), "0.5"]],
        states=[[KEYS.user_state(u), "n", "1"] for u in USERS],
        seen=[[KEYS.user_seen(u), 10, 10, ["a"], [1]] for u in USERS],
        increments=[
            [KEYS.popularity(), 0, 0, ["a"], [1.0]],
            [KEYS.category_popularity("films"), 0, 0, ["a"], [1.0]],
            *([KEYS.covisitation(i), 4, 5, ["b"], [1.0]] for i in ("a", "b", "c")),
        ],
        sets=[[KEYS.categories(), "films"]],
        landmark=[KEYS.popularity_landmark(), "123"],
        guards=[[KEYS.user_guards(u), "0", ["e1"], [1]] for u in USERS],
        expire=[60_000, [k for u in USERS for k in (KEYS.user_state(u), KEYS.user_seen(u))]],
    )


def _entries(write: BatchWrite) -> dict[str, list[Any]]:
    return {name: getattr(write, name) for name in SECTIONS}


def test_every_part_touches_one_slot_and_declares_every_key_it_touches() -> None:
    for slot, (keys, part) in split_by(_write(), _slot).items():
        assert {_slot(k) for k in keys} == {slot}
        touched = {
            entry[0]
            for name in ("rebase", "states", "seen", "increments", "sets", "guards")
            for entry in getattr(part, name)
        }
        touched |= set(part.landmark[:1]) | set(part.expire[1] if part.expire else [])
        assert touched == set(keys)


def test_the_parts_hold_the_whole_write_once() -> None:
    write = _write()
    parts = [part for _, part in split_by(write, _slot).values()]
    for name in ("rebase", "states", "seen", "increments", "sets", "guards"):
        together = [entry for part in parts for entry in getattr(part, name)]
        assert sorted(map(repr, together)) == sorted(map(repr, getattr(write, name)))
    expiring = [key for part in parts if part.expire[1] for key in part.expire[1]]
    assert sorted(expiring) == sorted(write.expire[1])
    assert all(part.expire[0] == 60_000 for part in parts)
    assert [part.landmark for part in parts if part.landmark] == [write.landmark]


def test_a_users_keys_and_the_popularity_keys_each_stay_in_one_part() -> None:
    parts = split_by(_write(), _slot)
    for user in USERS:
        (slot,) = {
            _slot(KEYS.user_state(user)),
            _slot(KEYS.user_seen(user)),
            _slot(KEYS.user_guards(user)),
        }
        assert KEYS.user_state(user) in parts[slot][0]
    pop = parts[_slot(KEYS.popularity())]
    assert {
        KEYS.popularity(),
        KEYS.popularity_landmark(),
        KEYS.categories(),
        KEYS.category_popularity("films"),
    } <= set(pop[0])
    assert pop[1].landmark == [KEYS.popularity_landmark(), "123"]
    assert len(pop[1].rebase) == 2  # a landmark move rescales every popularity set at once


def test_one_slot_for_everything_gives_the_write_back() -> None:
    write = _write()
    ((keys, part),) = split_by(write, lambda _key: 0).values()
    assert _entries(part) == _entries(write)
    assert len(keys) == len(set(keys))


def test_grouped_by_node_each_part_holds_every_slot_its_node_serves() -> None:
    def node_of(key: str) -> str:  # three nodes, each a third of the slots
        return f"node{_slot(key) * 3 // 16384}"

    parts = split_by(_write(), node_of)
    assert set(parts) <= {"node0", "node1", "node2"} and len(parts) > 1
    for node, (keys, _) in parts.items():
        assert {node_of(k) for k in keys} == {node}
    states = sorted(e[0] for _, part in parts.values() for e in part.states)
    assert states == sorted(KEYS.user_state(u) for u in USERS)
