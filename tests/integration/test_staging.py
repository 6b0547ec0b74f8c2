"""`recstream staging --smoke`, the short staging run: three Kafka nodes with SASL/SCRAM over
TLS, a TLS Redis with an ACL user, a Prometheus server, the roles as supervised processes; load
with malformed records on every topic; one SIGKILL of each role, a broker and the controller
leader killed, Redis killed, a request burst, near-limit records. Its verdicts must hold (state
equal to a clean replay, no acknowledged event lost, every malformed record dead-lettered with
a reason) and its report must carry figures read from the real Prometheus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from recstream.core.settings import Settings

pytestmark = pytest.mark.integration


def test_the_smoke_staging_run_passes_its_verdicts_and_reports_from_prometheus(
    infra: Settings, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    env |= infra.to_environment()  # where the broker jars are; the stack gets its own ports
    run = subprocess.run(
        [sys.executable, "-m", "recstream.cli", "staging", "--smoke", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    [folder] = [p for p in tmp_path.iterdir() if p.is_dir()]
    data = json.loads((folder / "staging.json").read_text())

    assert data["replay"]["passed"] and data["replay"]["users"] > 100
    assert data["log"]["missing"] == 0 and data["log"]["acknowledged"] > 1000
    for verdict in data["dead_letters"]:
        assert verdict["sent"] > 1 and verdict["dead_lettered"] == verdict["sent"], verdict
    faults = {fault["name"]: fault for fault in data["timeline"]["faults"]}
    for role in ("catalog", "interactions", "query", "train"):
        assert any(name.startswith(f"kill {role}.") for name in faults), faults.keys()
    unrecovered = {name: f["detail"] for name, f in faults.items() if f["recovered_s"] is None}
    assert not unrecovered, _with_log_tails(unrecovered, folder / "logs")
    assert {"kill redis"} <= faults.keys()
    assert sum("controller leader" in name for name in faults) == 1
    assert sum(name.startswith("burst") for name in faults) == 1
    answered = sum(n for status, n in data["requests"].items() if status != "never came back")
    assert answered > 0.95 * sum(data["requests"].values())

    steady = next(p for p in data["phase_figures"] if p["phase"] == "steady")
    assert steady["ingest_per_s"] > 0 and steady["query_p99_ms"] > 0  # read from Prometheus
    assert steady["client_requests"] > 0
    assert [goal["goal"] for goal in data["goals"]] == ["R1", "R2", "R3", "R4", "R5", "p99"]
    assert (folder / "staging.png").stat().st_size > 10_000
    report = (folder / "report.md").read_text()
    assert "## Goals" in report and "histogram_quantile" in report


def _with_log_tails(faults: dict[str, Any], logs: Path) -> str:
    """What a failed recovery needs to be understood: each fault's detail and the last lines
    of the killed process's log."""
    said = []
    for name, detail in faults.items():
        log = logs / f"{name.removeprefix('kill ')}.log"
        tail = log.read_text(errors="replace").splitlines()[-15:] if log.is_file() else []
        said.append(f"{name}: {detail}\n" + "\n".join(tail))
    return "\n\n".join(said)
