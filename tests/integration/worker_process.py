"""Run `recstream worker` as a real process with a test's isolated settings and read its metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from recstream.core.settings import Settings
from recstream.metrics_probe import metric_total


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class WorkerProcess:
    def __init__(
        self, settings: Settings, log_path: Path, roles: str = "catalog,interactions"
    ) -> None:
        self.metrics_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
        env |= settings.to_environment()
        env["RECSTREAM_METRICS_PORT"] = str(self.metrics_port)
        env["RECSTREAM_EMBED_THREADS"] = "1"
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "recstream.cli", "worker", "--roles", roles],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.log_path = log_path

    def metric(self, name: str, **labels: str) -> float:
        """Current value of a counter/gauge sample (0 when absent or not serving yet)."""
        return metric_total(self.metrics_port, name, **labels)

    def health(self) -> int:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/health", timeout=5
            ) as r:
                return int(r.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    def wait_for(
        self, name: str, at_least: float, timeout_s: float = 120.0, **labels: str
    ) -> float:
        deadline = time.monotonic() + timeout_s
        value = 0.0
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (
                "worker exited:\n" + self.log_path.read_text()[-3000:]
            )
            value = self.metric(name, **labels)
            if value >= at_least:
                return value
            time.sleep(0.2)
        raise AssertionError(
            f"{name}{labels} = {value} < {at_least}\n" + self.log_path.read_text()[-3000:]
        )

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, as an operator would; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
