"""A real Redis server (Debian's redis-server) with AOF persistence under the state directory."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from recstream.errors import PortInUseError, ServiceStartError, ServiceUnreachableError
from recstream.infra.process import ManagedProcess, has_exited, port_is_free, require_tool, tail
from recstream.settings import Settings


def redis_dir(settings: Settings) -> Path:
    return settings.state_dir.resolve() / "redis"


def redis_process(settings: Settings) -> ManagedProcess:
    root = redis_dir(settings)
    # redis-server rewrites its command line once running; its name is in both forms.
    return ManagedProcess("redis", root / "redis.pid", root / "redis.log", "redis-server")


def redis_answers(settings: Settings) -> bool:
    """True when Redis answers PING."""
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    client = redis.Redis.from_url(
        settings.redis_address, password=password, socket_timeout=1, socket_connect_timeout=1
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def wait_for_redis(
    settings: Settings,
    timeout_s: float,
    process: ManagedProcess | None = None,
    child: subprocess.Popen[bytes] | None = None,
) -> None:
    """Block until Redis answers; fail early if our process died (`child` when we just started
    it: its command line may not show redis-server yet), or after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if redis_answers(settings):
            return
        if process is not None and has_exited(process, child):
            raise ServiceStartError(
                "redis", "redis-server exited:\n" + tail(process.log_file), str(process.log_file)
            )
        time.sleep(0.05)
    raise ServiceUnreachableError("redis", settings.redis_address, timeout_s, "no PONG")


def start_redis(settings: Settings, timeout_s: float = 15.0) -> bool:
    """Start redis-server unless ours already runs; True when this call started it."""
    process = redis_process(settings)
    if process.running_pid() is not None:
        wait_for_redis(settings, timeout_s, process)
        return False
    if not port_is_free(settings.redis_port):
        raise PortInUseError("redis", settings.redis_port, "RECSTREAM_REDIS_PORT")
    server = require_tool(
        "redis-server", "install it (apt-get install redis-server); `make setup` does"
    )
    data = redis_dir(settings)
    data.mkdir(parents=True, exist_ok=True)
    command = [
        server,
        "--bind",
        "127.0.0.1",
        "--port",
        str(settings.redis_port),
        "--dir",
        str(data),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        # The data is mostly session vectors (float32), which LZF cannot shrink: compressing
        # them made the AOF rewrites' base file 2% smaller for half of the rewrites' CPU
        # (docs/benchmarks.md), on a core the processor needs.
        "--rdbcompression",
        "no",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
        "--logfile",
        "",
    ]
    if settings.redis_password:
        command += ["--requirepass", settings.redis_password.get_secret_value()]
    child = process.spawn(command)
    wait_for_redis(settings, timeout_s, process, child)
    return True


def stop_redis(settings: Settings) -> bool:
    """Stop the redis-server we started; AOF is flushed on SIGTERM."""
    return redis_process(settings).stop(timeout_s=30.0)
