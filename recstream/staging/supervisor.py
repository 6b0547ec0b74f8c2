"""The roles as separate processes, restarted when they die, as systemd or Kubernetes would:
honcho runs `recstream run`, but stops every role when one exits, which is right for a laptop
and wrong for a fault run. Each process's command and $PORT come from the same Procfile."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from honcho.environ import expand_processes, parse_procfile

from recstream.core.settings import Settings
from recstream.infra.topology import PROCFILE, ROLE_LINES, environment, http_get, process_report

RESTART_DELAY_S = 0.5
# Every role in one process, its index shard where the catalog's would be (the metrics port).
ONE_PROCESS = (
    "RECSTREAM_METRICS_PORT=$PORT "
    "RECSTREAM_QDRANT_PATH=${RECSTREAM_STATE_DIR:-.state}/replicas/all-$PORT "
    "recstream worker --roles catalog,interactions,query,train"
)


@dataclass
class RoleProcess:
    name: str  # role.copy, as honcho names it
    command: str
    env: dict[str, str]
    log_path: Path
    child: subprocess.Popen[bytes] | None = None
    starts: list[float] = field(default_factory=list)
    kills: list[float] = field(default_factory=list)
    exits: list[tuple[float, int]] = field(default_factory=list)  # (when seen, return code)

    @property
    def role(self) -> str:
        return self.name.split(".")[0]

    @property
    def port(self) -> int:
        return int(self.env["PORT"])

    def spawn(self) -> None:
        with self.log_path.open("ab") as log:
            # exec env: the signal reaches the worker itself, not a shell around it
            self.child = subprocess.Popen(
                ["/bin/sh", "-c", "exec env " + self.command],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        self.starts.append(time.time())

    def alive(self) -> bool:
        return self.child is not None and self.child.poll() is None

    def ready(self) -> bool:
        health = http_get("127.0.0.1", self.port, "/health")
        return health is not None and process_report(self.name, self.port, health, None).ready

    def rss_bytes(self) -> int:
        try:
            status = Path(f"/proc/{self.child.pid if self.child else 0}/status").read_text()
        except OSError:
            return 0
        line = next((row for row in status.splitlines() if row.startswith("VmRSS:")), "0 0")
        return int(line.split()[1]) * 1024


class Supervisor:
    """Starts every process of the topology and restarts any that exits (after
    RESTART_DELAY_S) until `stop`."""

    def __init__(self, settings: Settings, copies: dict[str, int] | None, logs: Path) -> None:
        """`copies` of each Procfile role; None: every role in one process (`all.1`), the
        layout before the roles were split, for comparison."""
        logs.mkdir(parents=True, exist_ok=True)
        if copies is None:
            lines = {"all": ONE_PROCESS}
            wanted = {"all": 1}
        else:
            lines = parse_procfile(PROCFILE.read_text()).processes
            wanted = {role: copies.get(role, 1) for role in ROLE_LINES}
        expanded = expand_processes(
            lines, wanted, environment(settings), port=settings.metrics_port
        )
        self.processes = {
            p.name: RoleProcess(p.name, p.cmd, dict(p.env), logs / f"{p.name}.log")
            for p in expanded
        }
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def start(self) -> None:
        for process in self.processes.values():
            process.spawn()
        self._watcher.start()

    def by_role(self) -> dict[str, list[RoleProcess]]:
        found: dict[str, list[RoleProcess]] = {}
        for process in self.processes.values():
            found.setdefault(process.role, []).append(process)
        return found

    def kill(self, name: str) -> float:
        """SIGKILL a process (the watcher starts it again); the kill's time."""
        process = self.processes[name]
        if process.child is not None and process.alive():
            os.kill(process.child.pid, signal.SIGKILL)
        process.kills.append(time.time())
        return process.kills[-1]

    def wait_ready(self, names: list[str] | None = None, timeout_s: float = 300.0) -> float:
        """Seconds until every named process (all by default) reports ready."""
        began = time.monotonic()
        pending = set(names or self.processes)
        while pending:
            pending = {n for n in pending if not self.processes[n].ready()}
            if time.monotonic() - began > timeout_s:
                raise TimeoutError(f"not ready after {timeout_s:.0f}s: {sorted(pending)}")
            if pending:
                time.sleep(0.2)
        return time.monotonic() - began

    def stop(self, timeout_s: float = 60.0) -> None:
        self._stopping.set()
        for process in self.processes.values():
            if process.alive() and process.child is not None:
                process.child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in self.processes.values():
            if process.child is None:
                continue
            try:
                process.child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.child.kill()
                process.child.wait()

    def _watch(self) -> None:
        while not self._stopping.wait(0.1):
            for process in self.processes.values():
                if not process.alive() and not self._stopping.is_set():
                    code = process.child.returncode if process.child else 0
                    process.exits.append((time.time(), code))
                    time.sleep(RESTART_DELAY_S)
                    process.spawn()
