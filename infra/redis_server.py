"""A real Redis server (Debian's redis-server) with AOF persistence under the state directory."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from recstream.core.settings import Settings
from recstream.infra.clients import redis_client
from recstream.infra.errors import PortInUseError, ServiceStartError, ServiceUnreachableError
from recstream.infra.process import ManagedProcess, has_exited, port_is_free, require_tool, tail

log = logging.getLogger(__name__)
MODULE_SOURCE = Path(__file__).parent / "redis_module" / "recstream_write.c"


def redis_dir(settings: Settings) -> Path:
    return settings.state_dir.resolve() / "redis"


def write_module(settings: Settings) -> Path | None:
    """The native batch-write module (infra/redis_module/README.md), compiled into the state
    directory when missing or older than its source. Switched off, the one built before (if any)
    is still loaded: the AOF may hold its commands, and Redis would not start without it. None
    when none can be had (the store then writes with its Lua script)."""
    built = redis_dir(settings) / "recstream_write.so"
    if not settings.redis_write_module:
        return built if built.exists() else None
    sources = [MODULE_SOURCE, MODULE_SOURCE.with_name("redismodule.h")]
    if built.exists() and built.stat().st_mtime >= max(s.stat().st_mtime for s in sources):
        return built
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log.warning("no C compiler: Redis runs without recstream's write module (slower writes)")
        return built if built.exists() else None
    built.parent.mkdir(parents=True, exist_ok=True)
    building = built.with_suffix(".building")
    command = [compiler, "-O2", "-fPIC", "-shared", "-std=c11", "-o", str(building)]
    result = subprocess.run([*command, str(MODULE_SOURCE)], capture_output=True, text=True)
    if result.returncode != 0:  # e.g. a platform whose linker wants other flags
        log.warning("building recstream's Redis write module failed:\n%s", result.stderr)
        return built if built.exists() else None
    building.replace(built)  # whole or not at all: a running Redis may have the old one open
    return built


def redis_process(settings: Settings) -> ManagedProcess:
    root = redis_dir(settings)
    # redis-server rewrites its command line once running; its name is in both forms.
    return ManagedProcess("redis", root / "redis.pid", root / "redis.log", "redis-server")


def redis_answers(settings: Settings) -> bool:
    """True when Redis answers PING."""
    client = redis_client(settings, socket_timeout=1, socket_connect_timeout=1)
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


@dataclass(frozen=True)
class RedisTLS:
    """Serve TLS only on RECSTREAM_REDIS_PORT (clients use rediss://), with client certificates
    required when `require_client_certificate`."""

    certificate: Path
    key: Path
    ca_certificate: Path
    require_client_certificate: bool = True

    def arguments(self, port: int) -> list[str]:
        return [
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(self.certificate),
            "--tls-key-file",
            str(self.key),
            "--tls-ca-cert-file",
            str(self.ca_certificate),
            "--tls-auth-clients",
            "yes" if self.require_client_certificate else "no",
        ]


def access_config(settings: Settings, folder: Path) -> list[str]:
    """The config file (mode 0600, so no password is on a command line) giving
    RECSTREAM_REDIS_USERNAME all commands and keys, with no default user; with only
    RECSTREAM_REDIS_PASSWORD, the default user's password (requirepass). Empty: no access
    control."""
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    if settings.redis_username:
        secret = _quoted(f">{password}") if password else "nopass"
        user = _quoted(settings.redis_username)
        lines = ["user default off", f"user {user} on {secret} ~* &* +@all"]
    elif password:
        lines = [f"requirepass {_quoted(password)}"]
    else:
        return []
    path = folder / "access.conf"
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text("".join(line + "\n" for line in lines))
    return [str(path)]


def _quoted(text: str) -> str:
    """A config-file argument in double quotes (Redis reads backslash escapes there)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def start_redis(settings: Settings, timeout_s: float = 15.0, tls: RedisTLS | None = None) -> bool:
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
    module = write_module(settings)
    listen = (
        ["--port", str(settings.redis_port)] if tls is None else tls.arguments(settings.redis_port)
    )
    command = [
        server,
        *access_config(settings, data),  # a config file comes first, then options
        "--bind",
        "127.0.0.1",
        *listen,
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
    if module is not None:
        command += ["--loadmodule", str(module)]
    child = process.spawn(command)
    wait_for_redis(settings, timeout_s, process, child)
    return True


def stop_redis(settings: Settings) -> bool:
    """Stop the redis-server we started; AOF is flushed on SIGTERM."""
    return redis_process(settings).stop(timeout_s=30.0)
