"""A user's session state and the effects of one batch: the values the interaction processor
computes (recstream.streams.session) and the session stores write and read."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from recstream.core.index import Vector

# A seen entry's score is the newest event time of an item hidden for good. An item hidden for a
# while (RECSTREAM_SEEN_HIDE_MS) scores the end of that while minus SEEN_FOR_A_WHILE, below every
# event time: the larger score is kept, so no later view shortens a purchase's "for good".
SEEN_FOR_A_WHILE = 10**15


def hidden_above(now_ms: int) -> int:
    """Seen entries scoring above this hide their item at now_ms."""
    return now_ms - SEEN_FOR_A_WHILE


@dataclass(slots=True)
class UserState:
    vector: Vector | None = None
    last_time: int = 0  # newest applied event time, ms
    floor: int = 0  # events older than this are too late to apply
    count: int = 0
    guard_ids: dict[str, int] = field(default_factory=dict)  # event id -> event time
    recent_items: list[str] = field(default_factory=list)  # newest last, for co-visitation
    model: str = ""  # collection whose vectors built `vector`
    # The collaborative side (streams/collab.py): r_u, and the factor folded in from it.
    collab_items: dict[str, float] = field(default_factory=dict)  # item -> summed weight
    collab_vector: Vector | None = None
    collab_version: int = 0  # model version `collab_vector` was folded in against
    # True once `guard_ids` is known to be in time order (as `_settle_guards` leaves it), which
    # lets the next settle cut the oldest ids off the front instead of scanning them all.
    guards_in_time_order: bool = False

    def copy(self, *, share_guard_ids: bool = False) -> UserState:
        """A copy to change. With share_guard_ids the guard ids stay one dict, for a caller that
        replaces it rather than changes it (`apply_batch`: copying a heavy user's 1024 ids every
        batch would cost more than the batch's own work for that user)."""
        return UserState(
            self.vector,
            self.last_time,
            self.floor,
            self.count,
            self.guard_ids if share_guard_ids else dict(self.guard_ids),
            list(self.recent_items),
            self.model,
            dict(self.collab_items),
            self.collab_vector,
            self.collab_version,
            self.guards_in_time_order,
        )


@dataclass
class BatchEffects:
    """Everything one batch changes, ready for a store to write at once."""

    states: dict[str, UserState] = field(default_factory=dict)
    seen: dict[str, dict[str, int]] = field(default_factory=dict)  # user -> item -> time
    new_guards: dict[str, dict[str, int]] = field(default_factory=dict)  # user -> event id -> time
    popularity: dict[str, float] = field(default_factory=dict)
    trending: dict[str, float] = field(default_factory=dict)  # the short half-life's boosts
    category_popularity: dict[tuple[str, str], float] = field(default_factory=dict)
    covisits: dict[str, dict[str, float]] = field(default_factory=dict)  # item -> other -> n
    # item -> the items chosen after it (within the user's last RECSTREAM_NEXT_WINDOW) -> n
    transitions: dict[str, dict[str, float]] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    vector_missing: int = 0
    fold_in_seconds: float = 0.0  # time spent on collaborative fold-ins (a metric)
    newest_time: int = 0
    landmark: int = 0
