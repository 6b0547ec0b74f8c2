"""A real Prometheus server (Debian's `prometheus`) scraping recstream's role processes with the
project's alert rules loaded, and its HTTP query API: the staging run reads its figures from it,
so an operator can run the same queries against their own Prometheus."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recstream.core.errors import RecstreamError
from recstream.infra.errors import PortInUseError, ServiceUnreachableError
from recstream.infra.process import ManagedProcess, has_exited, port_is_free, require_tool, tail

ALERT_RULES = Path(__file__).parent / "prometheus" / "alerts.yml"


@dataclass(frozen=True)
class PrometheusServer:
    """Scrapes `targets` (metrics ports on 127.0.0.1, labelled with their process name) as job
    "recstream" every `scrape_interval_s`; data and config under `root`."""

    root: Path
    port: int
    targets: dict[str, int]  # process name (role.copy) -> metrics port
    scrape_interval_s: float = 2.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def process(self) -> ManagedProcess:
        config = self.root / "prometheus.yml"
        return ManagedProcess(
            "prometheus", self.root / "prometheus.pid", self.root / "prometheus.log", str(config)
        )

    def config(self) -> dict[str, Any]:
        interval = f"{self.scrape_interval_s:g}s"
        return {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(ALERT_RULES)],
            "scrape_configs": [
                {
                    "job_name": "recstream",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{port}"], "labels": {"process": name}}
                        for name, port in self.targets.items()
                    ],
                }
            ],
        }

    def start(self, timeout_s: float = 60.0) -> None:
        binary = require_tool("prometheus", "apt-get install prometheus; `make setup` does")
        if not port_is_free(self.port):
            raise PortInUseError("prometheus", self.port, "the staging Prometheus port")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "prometheus.yml"
        config.write_text(json.dumps(self.config(), indent=2))  # JSON is YAML
        child = self.process.spawn(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=7d",
            ]
        )
        self._wait_ready(timeout_s, child)

    def stop(self) -> None:
        self.process.stop(timeout_s=30.0)

    def _wait_ready(self, timeout_s: float, child: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if has_exited(self.process, child):
                raise ServiceUnreachableError(
                    "prometheus", self.url, 0, "exited:\n" + tail(self.process.log_file)
                )
            time.sleep(0.3)
        raise ServiceUnreachableError("prometheus", self.url, timeout_s, "/-/ready not 200")

    def query(self, expression: str, at: float) -> list[dict[str, Any]]:
        """An instant query's result vector at unix time `at`."""
        return self._api("query", {"query": expression, "time": f"{at:.3f}"})

    def query_range(
        self, expression: str, start: float, end: float, step_s: float
    ) -> list[dict[str, Any]]:
        """A range query's matrix: [{"metric": {...}, "values": [[t, "v"], ...]}, ...]."""
        parameters = {
            "query": expression,
            "start": f"{start:.3f}",
            "end": f"{end:.3f}",
            "step": f"{step_s:g}",
        }
        return self._api("query_range", parameters)

    def _api(self, endpoint: str, parameters: dict[str, str]) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/{endpoint}?{urllib.parse.urlencode(parameters)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as answer:
                body = json.loads(answer.read())
        except urllib.error.HTTPError as error:
            refusal = error.read().decode(errors="replace")
            raise RecstreamError(f"prometheus refused {parameters['query']!r}: {refusal}") from None
        result: list[dict[str, Any]] = body["data"]["result"]
        return result
