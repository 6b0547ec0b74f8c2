"""The staging run's pure parts: the cluster's node configs, the Prometheus config, the state
comparison, the per-phase client figures, the alert stretches, the goals' verdicts, and the
fatal-error rule that ends a role."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import KafkaError, KafkaException

from recstream.core.settings import load_settings
from recstream.infra.kafka_cluster import LocalKafkaCluster, NodePorts, newest_leader
from recstream.infra.kafka_server import BrokerSecurity
from recstream.infra.messages import raise_if_fatal
from recstream.infra.prometheus_server import PrometheusServer
from recstream.staging import report
from recstream.staging.run import answers_recovered
from recstream.staging.supervisor import Supervisor
from recstream.staging.verdicts import state_differences
from recstream.staging.workload import REQUEST_TIMEOUT_S, Ledger, RequestFate

pytestmark = pytest.mark.unit

NODES = (NodePorts(1001, 1002, 1003), NodePorts(2001, 2002, 2003), NodePorts(3001, 3002, 3003))


def _cluster(tmp_path: Path) -> LocalKafkaCluster:
    security = BrokerSecurity(tmp_path / "k.pem", tmp_path / "ca.pem", 0, {"u": "p"})
    return LocalKafkaCluster(tmp_path, load_settings({}), NODES, security, tmp_path / "libs")


def _properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_every_node_is_a_voter_replicating_three_ways_with_two_in_sync(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    configs = [_properties(cluster.properties(n)) for n in cluster.node_ids]
    voters = "1@127.0.0.1:1003,2@127.0.0.1:2003,3@127.0.0.1:3003"
    for node_id, config in zip(cluster.node_ids, configs, strict=True):
        assert config["node.id"] == str(node_id)
        assert config["controller.quorum.voters"] == voters
        assert config["default.replication.factor"] == "3"
        assert config["min.insync.replicas"] == "2"
        assert config["offsets.topic.replication.factor"] == "3"
        assert config["unclean.leader.election.enable"] == "false"
        assert config["listener.security.protocol.map"].startswith("CLIENTS:SASL_SSL")
        assert config["listener.name.clients.ssl.client.auth"] == "required"
    assert configs[1]["listeners"] == (
        "CLIENTS://127.0.0.1:2001,INTERNAL://127.0.0.1:2002,CONTROLLER://127.0.0.1:2003"
    )


def test_the_controller_leader_is_the_one_the_newest_epoch_names() -> None:
    assert newest_leader({}) is None
    assert newest_leader({1: {"leaderId": -1, "leaderEpoch": 4}}) is None  # an election
    states = {1: {"leaderId": 1, "leaderEpoch": 3}, 2: {"leaderId": 2, "leaderEpoch": 5}}
    assert newest_leader(states) == 2
    assert newest_leader({1: states[1], 3: {"leaderId": 1, "leaderEpoch": 3}}) == 1


def test_prometheus_scrapes_every_process_labelled_by_name_with_the_alert_rules(
    tmp_path: Path,
) -> None:
    server = PrometheusServer(tmp_path, 9090, {"query.1": 29200, "query.2": 29201})
    config = server.config()
    [job] = config["scrape_configs"]
    assert job["job_name"] == "recstream"  # what the alert rules select
    assert job["static_configs"] == [
        {"targets": ["127.0.0.1:29200"], "labels": {"process": "query.1"}},
        {"targets": ["127.0.0.1:29201"], "labels": {"process": "query.2"}},
    ]
    assert Path(config["rule_files"][0]).name == "alerts.yml"


def _snapshot(vector: list[float], count: int = 3) -> dict[str, dict[str, object]]:
    return {
        "vectors": {"u1": np.array(vector, dtype=np.float32)},
        "counters": {"u1": (count, 10, 0, ["e1"], ["i1"])},
        "seen": {"u1": ["i1"]},
        "covis": {"i1": [("i2", 1.0)]},
        "next": {"i1": {"i2": 1.0}},
        "popularity": {"i1": 2.0},
    }


def test_equal_states_have_no_differences_and_each_kind_of_difference_is_named() -> None:
    assert state_differences(_snapshot([1.0, 0.0]), _snapshot([1.0, 0.000001])) == []
    assert state_differences(_snapshot([1.0, 0.0]), _snapshot([1.0, 0.1])) == ["vector of u1"]
    [counter] = state_differences(_snapshot([1.0, 0.0], 3), _snapshot([1.0, 0.0], 4))
    assert counter.startswith("counters of u1")
    other = _snapshot([1.0, 0.0])
    other["popularity"] = {"i1": 2.1}
    assert state_differences(_snapshot([1.0, 0.0]), other) == ["popularity of i1: 2.0 vs 2.1"]
    later = _snapshot([1.0, 0.0])
    later["next"] = {"i1": {"i2": 2.0}}
    [transitions] = state_differences(_snapshot([1.0, 0.0]), later)
    assert transitions.startswith("next of i1")


def test_client_figures_count_only_the_phases_requests_and_their_fates() -> None:
    requests = [
        [10.0, 10.010, "ok", 500.0],
        [10.5, 10.530, "ok", 1500.0],
        [11.0, 12.0, "overloaded", None],
        [11.5, None, None, None],
        [30.0, 30.001, "ok", 1.0],  # another phase
    ]
    figures = report._client_figures(requests, 10.0, 20.0)
    assert figures["client_requests"] == 4
    assert figures["client_statuses"] == {"ok": 2, "overloaded": 1, "never came back": 1}
    assert figures["client_p50_ms"] == pytest.approx(20.0, abs=0.01)
    assert figures["client_freshness_p99_s"] == pytest.approx(1.49, abs=0.01)


def test_alert_samples_two_steps_apart_are_one_stretch() -> None:
    assert report._runs([0, 2, 4, 10, 12, 30], 2.0) == [(0, 4), (10, 12), (30, 30)]


def _data(**changes: Any) -> dict[str, Any]:
    faults = [
        {"name": "kill query.1", "at": 100.0, "recovered_s": 8.0, "detail": {}},
        {
            "name": "kill broker 2",
            "at": 200.0,
            "recovered_s": 3.0,
            "detail": {"longest_ack_gap_s": 3.0},
        },
        {"name": "kill redis", "at": 300.0, "recovered_s": 4.0, "detail": {}},
        {"name": "burst 700 requests/s", "at": 400.0, "recovered_s": 2.0, "detail": {}},
    ]
    phases = [
        {"phase": "idle", "client_p99_ms": 20.0},
        {"phase": "steady", "client_p99_ms": 30.0, "query_rss_max_mib": 900.0},
        {"phase": "burst", "query_rss_max_mib": 1000.0, "shed_answers": 50.0},
    ]
    data = {
        "timeline": {"faults": faults},
        "phase_figures": phases,
        "processes": {"query.1": {"starts": 3, "kills": 1, "exits": [[101.0, -9], [205.0, 1]]}},
        "dead_letters": [{"sent": 10, "dead_lettered": 10}],
        "log": {"acknowledged": 100, "missing": 0, "duplicated": 0, "passed": True},
        "replay": {"passed": True, "users": 5, "differences": []},
        "requests": {"ok": 100},
    }
    return data | changes


def test_goals_are_met_by_a_clean_run_and_each_fails_on_its_own_evidence() -> None:
    assert all(goal["met"] for goal in report.goals(_data()))

    def unmet(data: dict[str, Any]) -> set[str]:
        return {goal["goal"] for goal in report.goals(data) if not goal["met"]}

    differing = {"passed": False, "users": 5, "differences": ["vector of u1"]}
    assert unmet(_data(replay=differing)) == {"R1", "R5"}
    lost = {"acknowledged": 100, "missing": 1, "duplicated": 0, "passed": False}
    assert unmet(_data(log=lost)) == {"R2"}
    assert unmet(_data(dead_letters=[{"sent": 10, "dead_lettered": 9}])) == {"R3"}
    crashed = {"query.1": {"starts": 3, "kills": 1, "exits": [[101.0, -9], [150.0, 1]]}}
    assert unmet(_data(processes=crashed)) == {"R3"}  # no broker or Redis fault before it
    swollen = _data()
    swollen["phase_figures"][2]["query_rss_max_mib"] = 2000.0
    assert unmet(swollen) == {"R4"}
    slow = _data()
    slow["phase_figures"][1]["client_p99_ms"] = 41.0
    assert unmet(slow) == {"p99"}


def test_a_fatal_client_error_is_raised_and_an_ordinary_one_is_not() -> None:
    raise_if_fatal(KafkaError(KafkaError._TRANSPORT, "broker down"))
    with pytest.raises(KafkaException):
        raise_if_fatal(KafkaError(KafkaError._FATAL, "fenced", fatal=True))
    with pytest.raises(KafkaException):  # a commit refused to a fenced member
        raise_if_fatal(KafkaError(KafkaError.FENCED_INSTANCE_ID, "fenced"))
    with pytest.raises(KafkaException):  # a commit on a client already fenced
        raise_if_fatal(KafkaError(KafkaError._FATAL, "Commit failed: Local: Fatal error"))


def test_the_supervisor_runs_the_procfile_roles_or_every_role_in_one_process(
    tmp_path: Path,
) -> None:
    settings = load_settings({"RECSTREAM_METRICS_PORT": "29000"})
    split = Supervisor(
        settings, {"catalog": 1, "interactions": 2, "query": 2, "train": 1}, tmp_path
    )
    ports = {name: process.port for name, process in split.processes.items()}
    assert ports == {
        "catalog.1": 29000,
        "interactions.1": 29100,
        "interactions.2": 29101,
        "query.1": 29200,
        "query.2": 29201,
        "train.1": 29300,
    }
    assert [p.name for p in split.by_role()["query"]] == ["query.1", "query.2"]
    assert "--roles query" in split.processes["query.2"].command
    [whole] = Supervisor(settings, None, tmp_path).processes.values()
    assert (whole.name, whole.port, whole.role) == ("all.1", 29000, "all")
    assert whole.command.endswith("recstream worker --roles catalog,interactions,query,train")


def _ledger(*fates: tuple[float, str | None]) -> Ledger:
    ledger = Ledger()
    for n, (sent, status) in enumerate(fates):
        ledger.requests[str(n)] = RequestFate(sent, None if status is None else sent, status)
    return ledger


def test_answers_recover_at_the_first_second_all_ok_once_every_earlier_one_is_settled() -> None:
    shed_then_ok = _ledger((100.2, "overloaded"), (100.5, "ok"), (101.1, "ok"), (101.9, "ok"))
    assert answers_recovered(shed_then_ok, since=100.0, now=102.0) == 1.0
    # An earlier second still waiting for an answer: not yet known, even with a later ok one.
    waiting = _ledger((100.2, None), (101.1, "ok"))
    assert answers_recovered(waiting, since=100.0, now=102.0) is None
    # ... until the client has given up on it: then that second failed.
    assert answers_recovered(waiting, since=100.0, now=100.2 + REQUEST_TIMEOUT_S + 1) == 1.0
    never_ok = _ledger((100.2, "expired"), (101.1, "error"))
    assert answers_recovered(never_ok, since=100.0, now=200.0) is None
    assert answers_recovered(shed_then_ok, since=101.0, now=102.0) == 0.0
