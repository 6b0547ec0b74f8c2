"""Train/test splits that respect time: nothing a method learns from happens after what it is
asked to predict (for the user being evaluated).

- last-n (default): each user's last `fraction` of interactions (at least one) is held out;
  training is every other event, in time order. Other users' later events stay in training, as
  in the usual leave-last-out protocol; docs/evaluation.md says what that means.
- global: one time cutoff at a quantile of event times; training is everything before it. Strict,
  and most test users are then new (the cold bucket).

Relevant test items: held-out items with a positive event (click or stronger).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from recstream.core.errors import RecstreamError
from recstream.schemas.events import InteractionEvent

RELEVANT_TYPES = frozenset({"click", "like", "add_to_cart", "purchase"})


@dataclass(frozen=True)
class Split:
    name: str
    train: list[InteractionEvent]  # time order
    relevant: dict[str, set[str]]  # test user -> held-out items with a positive event
    held_out: frozenset[tuple[str, str]]  # (user, item) pairs of every held-out event
    cutoff_ms: int | None = None  # global split: training ends here
    history: Counter[str] = field(default_factory=Counter)  # training events per user

    def visible(self, user_id: str, item_id: str, time_ms: int) -> bool:
        """Whether side information from this (user, item, time) may be used in training."""
        if self.cutoff_ms is not None and time_ms >= self.cutoff_ms:
            return False
        return (user_id, item_id) not in self.held_out


def _is_relevant(event: InteractionEvent) -> bool:
    return event.event_type in RELEVANT_TYPES or (
        event.event_type == "rating" and (event.value or 0.0) >= 3.5
    )


def _finish(
    name: str, train: list[InteractionEvent], test: list[InteractionEvent], cutoff: int | None
) -> Split:
    relevant: dict[str, set[str]] = defaultdict(set)
    for event in test:
        if _is_relevant(event):
            relevant[event.user_id].add(event.item_id)
    if not train or not relevant:
        raise RecstreamError(f"split {name!r} leaves no training events or no relevant test items")
    return Split(
        name,
        train,
        dict(relevant),
        frozenset((e.user_id, e.item_id) for e in test),
        cutoff,
        Counter(e.user_id for e in train),
    )


def last_fraction(events: Sequence[InteractionEvent], fraction: float = 0.2) -> Split:
    """Hold out each user's last `fraction` of events (at least one; users with a single event
    keep it for training). Events must be in time order; equal times keep their given order."""
    if not 0 < fraction < 1:
        raise RecstreamError(f"holdout fraction must be between 0 and 1, not {fraction}")
    per_user: dict[str, list[int]] = defaultdict(list)
    for position, event in enumerate(events):
        per_user[event.user_id].append(position)
    held: set[int] = set()
    for positions in per_user.values():
        if len(positions) >= 2:
            held.update(positions[-max(1, math.floor(fraction * len(positions))) :])
    train = [e for n, e in enumerate(events) if n not in held]
    test = [e for n, e in enumerate(events) if n in held]
    return _finish(f"last-{fraction:g}", train, test, None)


def global_cutoff(events: Sequence[InteractionEvent], quantile: float = 0.8) -> Split:
    """Train on every event before the time at `quantile` of all event times; test on the rest."""
    if not 0 < quantile < 1:
        raise RecstreamError(f"cutoff quantile must be between 0 and 1, not {quantile}")
    times = sorted(e.event_time for e in events)
    cutoff = times[min(len(times) - 1, int(quantile * len(times)))]
    train = [e for e in events if e.event_time < cutoff]
    test = [e for e in events if e.event_time >= cutoff]
    return _finish(f"global-{quantile:g}", train, test, cutoff)
