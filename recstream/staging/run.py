"""`recstream staging`: the staging stack, the workload, the fault schedule, the verdicts and
the report, from one command (docs/reliability.md, "Staging")."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from recstream.core.settings import Settings
from recstream.infra import topics
from recstream.infra.topology import report as process_reports
from recstream.staging import verdicts
from recstream.staging.report import write_report
from recstream.staging.stack import StagingStack, build_stack, metrics_base_port
from recstream.staging.supervisor import RoleProcess, Supervisor
from recstream.staging.workload import (
    REQUEST_TIMEOUT_S,
    Ledger,
    Rates,
    Workload,
    seed_item_ids,
)
from recstream.versions import group_lag, of_version

log = logging.getLogger(__name__)
REPLAY_VERSION = "replay"
REPLICA_COPIES = ("index", "items")  # the lags of the processes' item copies
STACK_SETTINGS = {
    "RECSTREAM_PARTITIONS_INTERACTIONS": "4",
    # A co-visit list is cut to its top N at each write, so once the cap bites, its tail
    # depends on where batches began: above the catalog's size it never bites and a clean
    # replay must match it exactly.
    "RECSTREAM_COVIS_MAX_NEIGHBOURS": "1000",
}
# The replay's catalog processor embeds every item again, so session vectors are compared
# within a tolerance (the report gives the largest item-vector difference); the counters,
# guards and histories catch a lost or doubled event exactly.
REPLAY_VECTOR_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Plan:
    """How long each phase lasts and how hard it pushes."""

    idle_s: float
    steady_s: float
    kills_per_role: int
    kill_interval_s: float
    broker_down_s: float
    redis_down_s: float
    burst_s: float
    request_capacity_per_s: float  # the burst sends 5x this
    rates: Rates
    users: int = 2000
    items: int = 300
    copies: dict[str, int] = field(
        default_factory=lambda: {"catalog": 1, "interactions": 2, "query": 2, "train": 1}
    )
    one_process: bool = False  # every role in one process instead (the layout before #18)
    # Which brokers are killed, in turn: False a broker that is not the controller leader,
    # True the controller leader.
    broker_kills: tuple[bool, ...] = (False, True)


FULL = Plan(
    idle_s=60,
    steady_s=120,
    kills_per_role=20,
    kill_interval_s=4,
    broker_down_s=20,
    redis_down_s=5,
    burst_s=10,
    request_capacity_per_s=140,
    rates=Rates(interactions_per_s=500, requests_per_s=20, catalog_per_s=1, malformed_share=0.05),
)
SMOKE = replace(
    FULL,
    idle_s=15,
    steady_s=20,
    kills_per_role=1,
    kill_interval_s=3,
    broker_down_s=8,
    redis_down_s=3,
    burst_s=3,
    # Lighter on a 2-core machine: five role processes, one broker restart.
    copies={"catalog": 1, "interactions": 1, "query": 2, "train": 1},
    broker_kills=(True,),
)


@dataclass
class Fault:
    name: str
    at: float
    recovered_s: float | None = None  # None: did not recover within the run
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Timeline:
    phases: list[tuple[str, float, float]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)

    def add(self, fault: Fault) -> Fault:
        log.info("fault: %s", fault.name)
        self.faults.append(fault)
        return fault

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        began = time.time()
        log.info("phase %s", name)
        try:
            yield
        finally:
            self.phases.append((name, began, time.time()))


def run_staging(base: Settings, plan: Plan, out: Path) -> dict[str, Any]:
    """The whole staging run; the report's data (also written under `out`)."""
    out = out.resolve()  # services that change directory read their certificates from here
    out.mkdir(parents=True, exist_ok=True)
    stack = build_stack(out / "stack", base, plan.copies, STACK_SETTINGS, plan.one_process)
    settings = stack.settings
    timeline = Timeline()
    try:
        stack.start()  # inside: a broker that fails to start must not leave Redis running
        topics.ensure_topics(settings, topics.planned_topics(settings))
        results = _run_roles(stack, plan, timeline, out)
        data = {"plan": asdict(plan), "timeline": _timeline_dict(timeline)} | results
        write_report(stack.prometheus, data, out)
    finally:
        stack.stop()
    return data


def _run_roles(stack: StagingStack, plan: Plan, timeline: Timeline, out: Path) -> dict[str, Any]:
    supervisor = Supervisor(stack.settings, None if plan.one_process else plan.copies, out / "logs")
    workload = Workload(stack.settings, plan.users, seed_item_ids(plan.items), plan.rates)
    try:
        with timeline.phase("start"):
            workload.seed_catalog()
            supervisor.start()
            supervisor.wait_ready()
            _wait_caught_up(stack.settings)
        results = _phases(stack, supervisor, workload, plan, timeline)
    finally:
        supervisor.stop()
    restarts = {
        name: {"starts": len(p.starts), "kills": len(p.kills), "exits": p.exits}
        for name, p in supervisor.processes.items()
    }
    return results | {"processes": restarts} | _verdicts(stack, workload, plan, out)


def _phases(
    stack: StagingStack, supervisor: Supervisor, workload: Workload, plan: Plan, timeline: Timeline
) -> dict[str, Any]:
    rates = plan.rates
    workload.interaction_rate, workload.catalog_rate = 0.0, 0.0
    workload.start()
    with timeline.phase("idle"):
        time.sleep(plan.idle_s)
    workload.interaction_rate, workload.catalog_rate = rates.interactions_per_s, rates.catalog_per_s
    with timeline.phase("steady"):
        time.sleep(plan.steady_s)
    with timeline.phase("role kills"):
        _kill_roles(supervisor, plan, timeline)
    for leader in plan.broker_kills:
        with timeline.phase("controller leader killed" if leader else "broker killed"):
            _kill_broker(stack, workload, plan, timeline, leader)
    with timeline.phase("redis killed"):
        _kill_redis(stack, supervisor, workload, plan, timeline)
    with timeline.phase("near-limit records"):
        near_limit = workload.near_limit_records()
        time.sleep(5)
    with timeline.phase("burst"):
        _burst(workload, plan, timeline)
    with timeline.phase("after burst"):
        time.sleep(max(10.0, plan.burst_s))
    workload.stop()
    with timeline.phase("drain"):
        workload.close()
        _wait_caught_up(workload.settings)
    return {"near_limit_keys": near_limit}


def _kill_roles(supervisor: Supervisor, plan: Plan, timeline: Timeline) -> None:
    """Round after round, SIGKILL one process of each role (the copies in turn). A round
    lasts as long in either layout: the one process is killed as often as each role is."""
    watchers = []
    roles = supervisor.by_role()
    gap_s = plan.kill_interval_s * sum(1 for n in plan.copies.values() if n) / len(roles)
    for round_number in range(plan.kills_per_role):
        for processes in roles.values():
            process = processes[round_number % len(processes)]
            starts_before = len(process.starts)
            fault = Fault(f"kill {process.name}", supervisor.kill(process.name))
            timeline.add(fault)
            watchers.append(_watch_recovery(process, fault, starts_before))
            time.sleep(gap_s)
    for watcher in watchers:
        watcher.join(RECOVERY_TIMEOUT_S + 5)


RECOVERY_TIMEOUT_S = 300.0


def _watch_recovery(process: RoleProcess, fault: Fault, starts_before: int) -> threading.Thread:
    """Seconds from the kill until the restarted process reports ready. Measured on the
    monotonic clock (`fault.at` is wall-clock, for the report); when it does not recover in
    time, the fault's detail says how often the process was started and how it exited."""

    def watch() -> None:
        began = time.monotonic()
        while time.monotonic() - began < RECOVERY_TIMEOUT_S:
            try:
                if len(process.starts) > starts_before and process.ready():
                    fault.recovered_s = time.monotonic() - began
                    return
            except Exception as error:  # a probe that fails is "not yet", and is reported
                fault.detail["probe_error"] = repr(error)
            time.sleep(0.2)
        fault.detail |= {"starts": len(process.starts) - starts_before, "exits": process.exits}

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _kill_broker(
    stack: StagingStack, workload: Workload, plan: Plan, timeline: Timeline, leader: bool
) -> None:
    kafka = stack.kafka
    controller = kafka.controller_leader()
    node = (
        controller if leader and controller else next(n for n in kafka.node_ids if n != controller)
    )
    fault = Fault(f"kill {'controller leader' if leader else 'broker'} {node}", time.time())
    timeline.add(fault)
    kafka.kill(node)
    time.sleep(plan.broker_down_s)
    kafka.restart(node)
    back = time.time()
    time.sleep(5)
    with workload.ledger.lock:
        acks = list(workload.ledger.ack_times)
    fault.detail = {
        "node": node,
        "longest_ack_gap_s": _longest_gap(acks, fault.at, time.time()),
        "new_controller": kafka.controller_leader(),
        "restart_s": back - fault.at - plan.broker_down_s,
    }
    fault.recovered_s = fault.detail["longest_ack_gap_s"]


def _kill_redis(
    stack: StagingStack, supervisor: Supervisor, workload: Workload, plan: Plan, timeline: Timeline
) -> None:
    fault = Fault("kill redis", time.time())
    timeline.add(fault)
    stack.kill_redis()
    time.sleep(plan.redis_down_s)
    stack.start_redis()
    restarted = time.time()
    fault.recovered_s = supervisor.wait_ready(timeout_s=300)
    fault.detail = {
        "down_s": plan.redis_down_s,
        "answers_ok_after_restart_s": _wait_answers_recovered(workload, restarted),
    }


def _burst(workload: Workload, plan: Plan, timeline: Timeline) -> None:
    normal = workload.request_rate
    workload.request_rate = 5 * plan.request_capacity_per_s
    fault = Fault(f"burst {workload.request_rate:.0f} requests/s", time.time())
    timeline.add(fault)
    time.sleep(plan.burst_s)
    workload.request_rate = normal
    ended = time.time()
    fault.recovered_s = _wait_answers_recovered(workload, ended)
    fault.detail = {"rate_per_s": 5 * plan.request_capacity_per_s, "seconds": plan.burst_s}


def _wait_answers_recovered(workload: Workload, since: float) -> float | None:
    """`answers_recovered`, once it can tell (None after RECOVERY_TIMEOUT_S)."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while (recovered := answers_recovered(workload.ledger, since, time.time())) is None:
        if time.monotonic() > deadline:
            return None
        time.sleep(1)
    return recovered


def answers_recovered(ledger: Ledger, since: float, now: float) -> float | None:
    """Seconds from `since` until the first whole second whose requests were all answered ok;
    None while an earlier second still waits for an answer (within the client's timeout), or
    when none was all ok."""
    with ledger.lock:
        fates = [f for f in ledger.requests.values() if f.sent >= since]
    given_up = now - REQUEST_TIMEOUT_S
    by_second: dict[int, list[str | None]] = {}
    for fate in fates:
        status = "never came back" if fate.status is None and fate.sent < given_up else fate.status
        by_second.setdefault(int(fate.sent - since), []).append(status)
    for second in sorted(by_second):
        if None in by_second[second]:
            return None
        if all(status == "ok" for status in by_second[second]):
            return float(second)
    return None


def _longest_gap(times: list[float], start: float, end: float) -> float:
    inside = sorted(t for t in times if start - 1 <= t <= end)
    if len(inside) < 2:
        return end - start
    return max(b - a for a, b in itertools.pairwise(inside))


def _wait_caught_up(settings: Settings, timeout_s: float = 600) -> None:
    """Until the catalog and interaction groups have committed everything and every replica
    reports no lag."""
    deadline = time.monotonic() + timeout_s
    group = settings.processing_group
    while time.monotonic() < deadline:
        lags = [
            _lag(settings, group, "catalog"),
            _lag(settings, group + "-interactions", "interactions"),
        ]
        replicas = process_reports(settings)
        behind = [
            r.name
            for r in replicas
            if not r.ready or any(r.lag.get(copy, 0) > 0 for copy in REPLICA_COPIES)
        ]
        if lags == [0, 0] and not behind:
            return
        time.sleep(1)
    raise TimeoutError(f"the pipeline did not catch up within {timeout_s:.0f}s")


def _lag(settings: Settings, group: str, kind: str) -> int:
    """The group's lag; a group that has committed nothing is behind by the whole topic."""
    lag = group_lag(settings, group, kind)
    if lag is not None:
        return lag
    topic = settings.topic_catalog if kind == "catalog" else settings.topic_interactions
    return verdicts.records_in(settings, topic)


def _verdicts(stack: StagingStack, workload: Workload, plan: Plan, out: Path) -> dict[str, Any]:
    settings = stack.settings
    ledger = workload.ledger
    log_result = verdicts.log_verdict(settings, ledger.acked_events)
    dead_letters = [
        verdicts.dead_letter_verdict(settings, topic, keys | {f"big-{topic}"})
        for topic, keys in sorted(ledger.malformed.items())
    ]
    statuses: dict[str, int] = {}
    for fate in ledger.requests.values():
        statuses[fate.status or "never came back"] = (
            statuses.get(fate.status or "never came back", 0) + 1
        )
    replay = _replay(stack, plan, out, sorted(set(ledger.acked_events.values())))
    return {
        "log": asdict(log_result)
        | {"passed": log_result.passed, "not_acknowledged": ledger.failed_events},
        "dead_letters": [asdict(v) | {"passed": v.passed} for v in dead_letters],
        "requests": statuses,
        "replay": replay,
        "client": _client_series(workload),
    }


def _replay(stack: StagingStack, plan: Plan, out: Path, users: list[str]) -> dict[str, Any]:
    """The same logs through a new pipeline version with nothing going wrong; its state against
    the faulty run's."""
    settings = stack.settings
    copies = {"catalog": 1, "interactions": 1, "query": 0, "train": 0}
    replay = of_version(settings, REPLAY_VERSION).model_copy(
        update={"metrics_port": metrics_base_port(copies | {"query": 0})}
    )
    topics.ensure_topics(replay, topics.planned_topics(replay))
    began = time.time()
    # The catalog first: an event whose item has no vector yet waits only so long
    # (RECSTREAM_ITEM_WAIT_MS), and the replay must not depend on how fast items are embedded.
    catalog = Supervisor(replay, copies | {"interactions": 0}, out / "logs" / "replay")
    interactions = Supervisor(replay, copies | {"catalog": 0}, out / "logs" / "replay")
    catalog.start()
    try:
        catalog.wait_ready()
        _wait_replayed(replay, "catalog")
        interactions.start()
        try:
            interactions.wait_ready()
            _wait_replayed(replay, "interactions")
        finally:
            interactions.stop()
    finally:
        catalog.stop()
    items = seed_item_ids(plan.items)
    reference = int(began * 1000)
    live = verdicts.state_snapshot(settings, users, items, reference)
    clean = verdicts.state_snapshot(replay, users, items, reference)
    differences = verdicts.state_differences(live, clean, REPLAY_VECTOR_TOLERANCE)
    oracle = verdicts.oracle_covisits(settings, items)
    return {
        "users": len(users),
        "item_vector_max_difference": verdicts.item_vector_difference(settings, replay, items),
        "replay_s": time.time() - began,
        "differences": differences,
        "covis_items_off_the_log": {
            "live": sum(live["covis"][i] != oracle[i] for i in items),
            "replay": sum(clean["covis"][i] != oracle[i] for i in items),
        },
        "passed": not differences,
    }


def _wait_replayed(settings: Settings, kind: str, timeout_s: float = 900) -> None:
    group = settings.processing_group + ("-interactions" if kind == "interactions" else "")
    deadline = time.monotonic() + timeout_s
    while _lag(settings, group, kind) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the replay's {kind} processor did not catch up")
        time.sleep(1)


def _client_series(workload: Workload) -> dict[str, Any]:
    with workload.ledger.lock:
        fates = list(workload.ledger.requests.values())
        acks = list(workload.ledger.ack_times)
    return {
        "requests": [[f.sent, f.answered, f.status, f.state_age_ms] for f in fates],
        "acks_per_second": _per_second(acks),
    }


def _per_second(times: list[float]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for t in times:
        counts[int(t)] = counts.get(int(t), 0) + 1
    return counts


def _timeline_dict(timeline: Timeline) -> dict[str, Any]:
    return {
        "phases": [{"name": n, "start": s, "end": e} for n, s, e in timeline.phases],
        "faults": [asdict(f) for f in timeline.faults],
    }
