"""The roles as processes: the Procfile, the compose file and what `recstream status` reads."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
import yaml

from recstream.compose import ROLES
from recstream.core.settings import load_settings
from recstream.infra import topology

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _procfile() -> dict[str, str]:
    lines = topology.PROCFILE.read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line and not line.startswith("#"))


def test_the_procfile_runs_each_role_in_its_own_process_in_the_order_ports_follow() -> None:
    procfile = _procfile()
    assert tuple(procfile) == topology.ROLE_LINES
    assert set(procfile) == set(ROLES)
    for role, command in procfile.items():
        assert command.endswith(f"recstream worker --roles {role}")
        assert "RECSTREAM_METRICS_PORT=$PORT" in command
    # A role that searches item vectors keeps a shard of its own: one folder per process.
    for role in ("catalog", "query"):
        assert re.search(rf"RECSTREAM_QDRANT_PATH=\S+/replicas/{role}-\$PORT", procfile[role])


def test_the_compose_file_has_one_service_per_role() -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    assert {name: s["command"] for name, s in services.items()} == {
        role: ["worker", "--roles", role] for role in ROLES
    }


def test_ports_follow_honchos_rule_and_the_command_names_every_role() -> None:
    settings = load_settings({"RECSTREAM_METRICS_PORT": "9000"})
    assert topology.role_port(settings, "catalog") == 9000
    assert topology.role_port(settings, "query", copy=1) == 9201
    assert topology.role_port(settings, "train") == 9300
    command = topology.command(settings, {"query": 3, "train": 0})
    assert command[command.index("-p") + 1] == "9000"
    assert command[-1] == "catalog=1,interactions=1,query=3,train=0"


def test_a_process_report_says_why_it_is_not_ready_and_sums_its_lag() -> None:
    health = orjson.dumps(
        {
            "ready": False,
            "checks": {"kafka": True, "replica caught up": False},
            "roles": {"query": "ok", "replica": "dead: boom"},
        }
    )
    metrics = (
        b'recstream_consumer_lag_records{role="query"} 3.0\n'
        b'recstream_replica_lag_records{replica="index"} 40.0\n'
        b'recstream_replica_lag_records{replica="index"} 2.0\n'
    )
    report = topology.process_report("query.2", 9201, health, metrics)
    assert not report.ready
    assert report.problems == ("replica caught up failing", "replica: dead: boom")
    assert report.lag == {"query": 3.0, "index": 42.0}
    assert report.row() == [
        "query.2",
        "9201",
        "NOT ready: replica caught up failing; replica: dead: boom",
        "index 42, query 3",
    ]
