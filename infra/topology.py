"""The roles as separate processes on one machine: infra/Procfile run by honcho (a well-kept
Foreman port), and what each of them reports (`recstream status`).

Ports follow honcho's rule: the base port (RECSTREAM_METRICS_PORT) plus 100 per Procfile line,
plus 1 per further copy of a role, so every process is found without a registry.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from recstream.core.errors import RecstreamError
from recstream.core.settings import Settings

PROCFILE = Path(__file__).with_name("Procfile")
ROLE_LINES = ("catalog", "interactions", "query", "train")  # the Procfile's order
MAX_COPIES = 20  # of one role, looked for by `recstream status`
_LAGS = ("recstream_consumer_lag_records", "recstream_replica_lag_records")


def role_port(settings: Settings, role: str, copy: int = 0) -> int:
    """The metrics port of a role's process (copy 0 is the first)."""
    return settings.metrics_port + 100 * ROLE_LINES.index(role) + copy


def environment(settings: Settings) -> dict[str, str]:
    """The roles' environment: exactly these settings, and this interpreter's `recstream`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    env |= settings.to_environment()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def command(settings: Settings, copies: dict[str, int]) -> list[str]:
    """honcho running the Procfile's roles, `copies` of each (0 leaves a role out)."""
    if not settings.metrics_port:
        raise RecstreamError("the roles are told apart by port: set RECSTREAM_METRICS_PORT")
    wanted = ",".join(f"{role}={copies.get(role, 1)}" for role in ROLE_LINES)
    return [
        sys.executable,
        "-m",
        "honcho",
        "-f",
        str(PROCFILE),
        "-d",
        str(Path.cwd()),
        "start",
        "-p",
        str(settings.metrics_port),
        "-c",
        wanted,
    ]


def start(settings: Settings, copies: dict[str, int], log_path: Path) -> subprocess.Popen[bytes]:
    """`command` in the background, in its own process group, its output in log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command(settings, copies),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment(settings),
            start_new_session=True,
        )


def stop(manager: subprocess.Popen[bytes], timeout_s: float = 60.0) -> int:
    """SIGTERM to honcho, which passes it to every role and waits for them."""
    if manager.poll() is None:
        os.killpg(manager.pid, signal.SIGTERM)
    try:
        return manager.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(manager.pid, signal.SIGKILL)
        return manager.wait()


@dataclass(frozen=True)
class ProcessReport:
    """What one role process says about itself."""

    name: str  # role.copy, as honcho names it
    port: int
    ready: bool
    problems: tuple[str, ...]
    lag: dict[str, float]

    def row(self) -> list[str]:
        state = "ready" if self.ready else "NOT ready: " + "; ".join(self.problems)
        lag = ", ".join(f"{what} {int(n)}" for what, n in sorted(self.lag.items())) or "-"
        return [self.name, str(self.port), state, lag]

    def as_dict(self) -> dict[str, Any]:
        return {
            "process": self.name,
            "port": self.port,
            "ready": self.ready,
            "problems": list(self.problems),
            "lag": self.lag,
        }


def report(settings: Settings, host: str = "127.0.0.1") -> list[ProcessReport]:
    """Every role process answering on its port (a role's copies are looked for until one does
    not answer)."""
    found = []
    for role in ROLE_LINES:
        for copy in range(MAX_COPIES):
            port = role_port(settings, role, copy)
            health = http_get(host, port, "/health")
            if health is None:
                break
            found.append(
                process_report(f"{role}.{copy + 1}", port, health, http_get(host, port, "/metrics"))
            )
    return found


def process_report(name: str, port: int, health: bytes, metrics: bytes | None) -> ProcessReport:
    body = orjson.loads(health)
    problems = [f"{check} failing" for check, ok in body.get("checks", {}).items() if not ok]
    problems += [f"{role}: {say}" for role, say in body.get("roles", {}).items() if say != "ok"]
    lag: dict[str, float] = {}
    for family in text_string_to_metric_families((metrics or b"").decode()):
        for sample in family.samples:
            if sample.name in _LAGS:
                what = sample.labels.get("role") or sample.labels.get("replica", "")
                lag[what] = lag.get(what, 0.0) + sample.value
    return ProcessReport(name, port, bool(body.get("ready")), tuple(problems), lag)


def http_get(host: str, port: int, path: str) -> bytes | None:
    """The body (also of a 503), or None when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=2) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as error:
        return bytes(error.read())
    except OSError:
        return None


def wait_ready(
    settings: Settings, copies: dict[str, int], manager: subprocess.Popen[bytes], timeout_s: float
) -> None:
    """Until every process of the topology reports ready; RecstreamError when honcho exits
    (a role failed to start) or the time is up."""
    expected = sum(copies.get(role, 1) for role in ROLE_LINES)
    deadline = time.monotonic() + timeout_s
    while True:
        reports = report(settings)
        if len(reports) == expected and all(r.ready for r in reports):
            return
        if manager.poll() is not None:
            raise RecstreamError(f"the roles' process manager exited ({manager.returncode})")
        if time.monotonic() > deadline:
            waiting = [r.name for r in reports if not r.ready]
            raise RecstreamError(
                f"{len(reports)} of {expected} processes answer after {timeout_s:.0f}s; "
                f"not ready: {waiting}"
            )
        time.sleep(0.5)
