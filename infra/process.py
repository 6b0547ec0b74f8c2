"""Start, find and stop a background service process through a pid file."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from recstream.infra.errors import ToolMissingError


def require_tool(tool: str, hint: str) -> str:
    """Path of an executable, or a ToolMissingError that says how to install it."""
    path = shutil.which(tool)
    if path is None:
        raise ToolMissingError(tool, hint)
    return path


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port (bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def tail(path: Path, lines: int = 15) -> str:
    """Last lines of a log file, for error messages."""
    if not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


@dataclass(frozen=True)
class ManagedProcess:
    """A service we start in its own session and track by pid file.

    `marker` must appear in the process command line: it guards against a stale pid file whose
    pid now belongs to some unrelated process.
    """

    name: str
    pid_file: Path
    log_file: Path
    marker: str

    def running_pid(self) -> int | None:
        """The pid of our live process, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if self.marker in (_cmdline(pid) or ""):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def spawn(
        self, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start argv detached from our session, output appended to the log file."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        self.pid_file.write_text(f"{process.pid}\n")
        return process

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM our process, SIGKILL it after timeout_s; False when it was not running."""
        pid = self.running_pid()
        if pid is None:
            return False
        _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> bool:
        """SIGKILL our process (a crash, for fault tests) and wait until it is gone; False when
        it was not running."""
        pid = self.running_pid()
        if pid is None:
            return False
        _signal(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True


def _cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:  # a zombie has an empty command line
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _alive(pid: int) -> bool:
    # Reap our own child if it exited, so it does not linger as a zombie.
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    return _cmdline(pid) is not None


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def has_exited(process: ManagedProcess, child: subprocess.Popen[bytes] | None) -> bool:
    """Whether a service died. For a child we just spawned ask the child itself: between fork and
    exec its command line is still ours, which running_pid would take for a stale pid file."""
    if child is not None:
        return child.poll() is not None
    return process.running_pid() is None
