"""Each worker's operator endpoint.

- `/metrics`: Prometheus.
- `/health` (readiness): 200 once Kafka, Redis and the vector index answer and no role is dead
  or stuck, else 503; the JSON body says which part is not.
- `/health/live` (liveness): 503 when a role thread died or is stuck (holding records it does
  not commit), whatever the services say: the process should be restarted.

Served by a threaded server with a read timeout, so a slow or idle client (a half-open TCP
connection) cannot block scrapes and probes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

Check = Callable[[], bool]
RoleProblems = Callable[[], dict[str, str | None]]
READ_TIMEOUT_S = 5.0


class _Handler(WSGIRequestHandler):
    timeout = READ_TIMEOUT_S  # socket timeout per connection: an idle client is dropped

    def log_message(self, *_: Any) -> None:  # scrapes every few seconds would flood the log
        pass


class HealthChecks:
    """Named dependency checks, each run at most once a second (a scrape storm must not hammer
    Kafka), and the roles' problems (read every time: they are in-memory)."""

    def __init__(self, checks: dict[str, Check], cache_s: float = 1.0) -> None:
        self._checks = checks
        self._cache_s = cache_s
        self._last: tuple[float, dict[str, bool]] = (0.0, {})
        self._lock = threading.Lock()
        self._roles: RoleProblems = dict

    def add_checks(self, checks: dict[str, Check]) -> None:
        with self._lock:
            self._checks.update(checks)
            self._last = (0.0, {})

    def watch_roles(self, problems: RoleProblems) -> None:
        self._roles = problems

    def status(self) -> dict[str, bool]:
        with self._lock:
            checked_at, result = self._last
            if time.monotonic() - checked_at > self._cache_s:
                result = {name: _safe(check) for name, check in self._checks.items()}
                self._last = (time.monotonic(), result)
            return result

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        parts = self.status()
        roles = self._roles()
        ready = bool(parts) and all(parts.values()) and not any(roles.values())
        return ready, {"ready": ready, "checks": parts, "roles": _described(roles)}

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        roles = self._roles()
        alive = not any(roles.values())
        return alive, {"alive": alive, "roles": _described(roles)}


def _described(roles: dict[str, str | None]) -> dict[str, str]:
    return {name: problem or "ok" for name, problem in roles.items()}


def _safe(check: Check) -> bool:
    try:
        return bool(check())
    except Exception:  # a failing dependency is "not ready", never a crashed endpoint
        return False


def serve(port: int, health: HealthChecks, host: str = "127.0.0.1") -> WSGIServer:
    """Start the endpoint on host:port in a daemon thread (one thread per connection)."""
    metrics = make_wsgi_app()
    probes = {"/health": health.readiness, "/health/live": health.liveness}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        probe = probes.get(environ.get("PATH_INFO", ""))
        if probe is None:
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        ok, body = probe()
        start_response(
            "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")]
        )
        return [orjson.dumps(body)]

    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_Handler)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
