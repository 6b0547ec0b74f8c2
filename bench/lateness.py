"""The lateness trade-off (a benchmark, not a test: it asserts nothing).

A user's event older than their newest applied event minus RECSTREAM_ALLOWED_LATENESS_MS is
dropped (counted as too_late): keeping every event id forever would be the only other way to
refuse replays. A longer lateness accepts more late events and keeps more event ids (the
guards) per user, up to 1024; a user with more events than that inside the window drops the
oldest ids' events as too_late_guard_cap instead.

The stream: 2,000 users, 200,000 events over six hours of event time; 90 % of events arrive
within a second of happening, 9 % within minutes (a retry), 1 % hours late (a phone that was
offline). They are applied in arrival order by the processor's own pass
(`streams.session.apply_batch`), in batches of 5,000, for each allowed lateness; the share
dropped by reason and the guard ids kept per user are reported.
"""

from __future__ import annotations

import argparse
import os
import platform

import numpy as np
import orjson

from recstream.compose import session_config
from recstream.core.settings import load_settings
from recstream.core.state import UserState
from recstream.schemas.events import InteractionEvent
from recstream.streams.session import apply_batch

MINUTE = 60_000
HOUR = 60 * MINUTE
LATENESS_MS = [0, MINUTE, 10 * MINUTE, HOUR, 6 * HOUR, 24 * HOUR]


def _stream(users: int, events: int, seed: int = 7) -> list[InteractionEvent]:
    rng = np.random.default_rng(seed)
    happened = np.sort(rng.integers(0, 6 * HOUR, size=events)) + 1_700_000_000_000
    kind = rng.random(events)
    delay = np.where(
        kind < 0.9,
        rng.integers(0, 1000, size=events),
        np.where(
            kind < 0.99,
            rng.integers(MINUTE, 10 * MINUTE, size=events),
            rng.integers(HOUR, 5 * HOUR, size=events),
        ),
    )
    order = np.argsort(happened + delay, kind="stable")
    who = rng.zipf(1.3, size=events) % users  # a few heavy users, many light ones
    return [
        InteractionEvent(f"e{n}", f"u{who[n]}", f"i{n % 500}", "view", int(happened[n]))
        for n in order.tolist()
    ]


def _apply(stream: list[InteractionEvent], lateness: int) -> dict[str, float]:
    config = session_config(load_settings({}, allowed_lateness_ms=lateness, covis_window=0))
    states: dict[str, UserState] = {}
    outcomes: dict[str, int] = {}
    for start in range(0, len(stream), 5000):
        effects = apply_batch(stream[start : start + 5000], states, {}, {}, config, "m", 8, 0)
        states.update(effects.states)
        for outcome, count in effects.outcomes.items():
            outcomes[outcome] = outcomes.get(outcome, 0) + count
    guards = [len(state.guard_ids) for state in states.values()]
    total = len(stream)
    return {
        "lateness_min": lateness / MINUTE,
        "too_late_pct": round(100 * outcomes.get("too_late", 0) / total, 3),
        "too_late_guard_cap_pct": round(100 * outcomes.get("too_late_guard_cap", 0) / total, 3),
        "guard_ids_mean": round(float(np.mean(guards)), 1),
        "guard_ids_max": int(np.max(guards)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    stream = _stream(args.users, args.events)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    rows = [_apply(stream, lateness) for lateness in LATENESS_MS]
    print(orjson.dumps({"machine": machine, "rows": rows}, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
