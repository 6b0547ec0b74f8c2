from __future__ import annotations

import socket
import urllib.error
import urllib.request

import orjson

from recstream.infra.http import HealthChecks, serve


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_health_is_not_ready_until_every_check_answers() -> None:
    redis_up = {"value": False}

    def broken() -> bool:
        raise ConnectionError("down")

    health = HealthChecks({}, cache_s=0.0)
    port = _port()
    server = serve(port, health)
    try:
        assert _get(port, "/health") == (
            503,
            orjson.dumps({"ready": False, "checks": {}, "roles": {}}),
        )
        health.add_checks(
            {"kafka": lambda: True, "redis": lambda: redis_up["value"], "index": broken}
        )
        status, body = _get(port, "/health")
        assert status == 503
        assert orjson.loads(body)["checks"] == {"kafka": True, "redis": False, "index": False}
        redis_up["value"] = True
        health.add_checks({"index": lambda: True})
        assert _get(port, "/health")[0] == 200
        status, metrics = _get(port, "/metrics")
        assert status == 200 and b"python_info" in metrics
    finally:
        server.shutdown()


def test_an_idle_connection_does_not_block_health_or_metrics() -> None:
    port = _port()
    health = HealthChecks({"kafka": lambda: True}, cache_s=0.0)
    server = serve(port, health)
    idle = socket.create_connection(("127.0.0.1", port))  # connects, never sends a request
    try:
        assert _get(port, "/health")[0] == 200
        assert _get(port, "/metrics")[0] == 200
    finally:
        idle.close()
        server.shutdown()


def test_a_dead_or_stuck_role_fails_liveness_and_readiness() -> None:
    problems: dict[str, str | None] = {"interactions": None, "query": None}
    health = HealthChecks({"kafka": lambda: True}, cache_s=0.0)
    health.watch_roles(lambda: dict(problems))
    port = _port()
    server = serve(port, health)
    try:
        assert _get(port, "/health/live") == (
            200,
            orjson.dumps({"alive": True, "roles": {"interactions": "ok", "query": "ok"}}),
        )
        assert _get(port, "/health")[0] == 200
        problems["query"] = "dead: RuntimeError: boom"
        status, body = _get(port, "/health/live")
        assert status == 503
        assert orjson.loads(body)["roles"]["query"] == "dead: RuntimeError: boom"
        assert _get(port, "/health")[0] == 503
    finally:
        server.shutdown()


def test_the_endpoint_listens_on_the_address_it_is_given() -> None:
    port = _port()
    server = serve(port, HealthChecks({}), host="0.0.0.0")
    try:
        assert server.server_address[0] == "0.0.0.0"
        assert _get(port, "/metrics")[0] == 200  # reachable through 127.0.0.1 too
    finally:
        server.shutdown()
