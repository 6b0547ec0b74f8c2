"""Each worker's operator endpoint: /metrics (Prometheus) and /health (503 until Kafka, Redis and
the vector index all answer, then 200, with a JSON body saying which part is down)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import make_wsgi_app

Check = Callable[[], bool]


class _Quiet(WSGIRequestHandler):
    def log_message(self, *_: Any) -> None:  # scrapes every few seconds would flood the log
        pass


class HealthChecks:
    """Named checks, each run at most once a second (a scrape storm must not hammer Kafka)."""

    def __init__(self, checks: dict[str, Check], cache_s: float = 1.0) -> None:
        self._checks = checks
        self._cache_s = cache_s
        self._last: tuple[float, dict[str, bool]] = (0.0, {})
        self._lock = threading.Lock()

    def add_checks(self, checks: dict[str, Check]) -> None:
        with self._lock:
            self._checks.update(checks)
            self._last = (0.0, {})

    def status(self) -> dict[str, bool]:
        with self._lock:
            checked_at, result = self._last
            if time.monotonic() - checked_at > self._cache_s:
                result = {name: _safe(check) for name, check in self._checks.items()}
                self._last = (time.monotonic(), result)
            return result


def _safe(check: Check) -> bool:
    try:
        return bool(check())
    except Exception:  # a failing dependency is "not ready", never a crashed endpoint
        return False


def serve(port: int, health: HealthChecks) -> WSGIServer:
    """Start the endpoint on 127.0.0.1:port in a daemon thread."""
    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/health":
            parts = health.status()
            ready = bool(parts) and all(parts.values())
            start_response(
                "200 OK" if ready else "503 Service Unavailable",
                [("Content-Type", "application/json")],
            )
            return [orjson.dumps({"ready": ready, "checks": parts})]
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    server = make_server("127.0.0.1", port, app, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
