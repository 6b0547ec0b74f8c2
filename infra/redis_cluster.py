"""A real local Redis Cluster: Debian's redis-server started as several nodes with
`cluster-enabled yes` (AOF on, the settings' ACL user or password), joined by
`redis-cli --cluster create`. For tests and benchmarks of `redis+cluster://` URLs; a team runs
its own cluster and points RECSTREAM_REDIS_URL at any node of it."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from recstream.core.settings import Settings
from recstream.infra.clients import redis_client
from recstream.infra.errors import PortInUseError, ServiceStartError, ServiceUnreachableError
from recstream.infra.process import ManagedProcess, has_exited, port_is_free, require_tool, tail
from recstream.infra.redis_server import access_config, redis_dir

SLOTS = 16384


@dataclass(frozen=True)
class LocalCluster:
    """Nodes on 127.0.0.1 at `ports`, state under `<state dir>/redis-cluster/<port>`."""

    settings: Settings
    ports: tuple[int, ...]

    @property
    def url(self) -> str:
        """The cluster URL clients are given (any node serves as the seed)."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}/0"

    def node_dir(self, port: int) -> Path:
        return redis_dir(self.settings).parent / "redis-cluster" / str(port)

    def node(self, port: int) -> ManagedProcess:
        folder = self.node_dir(port)
        return ManagedProcess(
            f"redis-{port}", folder / "redis.pid", folder / "redis.log", "redis-server"
        )

    def client_settings(self) -> Settings:
        """The settings, with RECSTREAM_REDIS_URL naming this cluster."""
        return self.settings.model_copy(update={"redis_url": self.url})

    def start(self, timeout_s: float = 30.0) -> bool:
        """Start the nodes that are not running and, on a fresh cluster, join them; True when
        this call started any node."""
        started = [port for port in self.ports if self.node(port).running_pid() is None]
        children = {port: self._start_node(port) for port in started}
        for port in self.ports:
            self._wait_for_node(port, timeout_s, children.get(port))
        if not self._assigned(self.ports[0]):
            self._create()
        self.wait_ok(timeout_s)
        return bool(started)

    def stop(self) -> None:
        for port in self.ports:
            self.node(port).stop(timeout_s=30.0)

    def restart_node(self, port: int, timeout_s: float = 30.0) -> None:
        """SIGTERM one node (it flushes its AOF) and start it again on the same data."""
        self.node(port).stop(timeout_s=30.0)
        self._wait_for_node(port, timeout_s, self._start_node(port))
        self.wait_ok(timeout_s)

    def wait_ok(self, timeout_s: float) -> None:
        """Until every node says the cluster is ok (all slots served)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self._info(port).get("cluster_state") == "ok" for port in self.ports):
                return
            time.sleep(0.1)
        raise ServiceUnreachableError("redis cluster", self.url, timeout_s, "cluster_state not ok")

    def _start_node(self, port: int) -> subprocess.Popen[bytes]:
        if not port_is_free(port) or not port_is_free(port + 10000):  # + the cluster bus port
            raise PortInUseError(f"redis cluster node {port}", port, "the cluster's ports")
        server = require_tool(
            "redis-server", "install it (apt-get install redis-server); `make setup` does"
        )
        folder = self.node_dir(port)
        folder.mkdir(parents=True, exist_ok=True)
        command = [
            server,
            *access_config(self.settings, folder),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(folder),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "5000",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--daemonize",
            "no",
            "--logfile",
            "",
        ]
        return self.node(port).spawn(command)

    def _node_client(self, port: int) -> redis.Redis[bytes]:
        single = self.settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
        return redis_client(single, socket_timeout=2, socket_connect_timeout=2)

    def _wait_for_node(
        self, port: int, timeout_s: float, child: subprocess.Popen[bytes] | None = None
    ) -> None:
        deadline = time.monotonic() + timeout_s
        process = self.node(port)
        while time.monotonic() < deadline:
            client = self._node_client(port)
            try:
                if client.ping():
                    return
            except redis.RedisError:
                pass
            finally:
                client.close()
            if has_exited(process, child):
                log = process.log_file
                raise ServiceStartError(f"redis {port}", "exited:\n" + tail(log), str(log))
            time.sleep(0.05)
        raise ServiceUnreachableError(f"redis {port}", f"127.0.0.1:{port}", timeout_s, "no PONG")

    def _info(self, port: int) -> dict[str, str]:
        client = self._node_client(port)
        try:
            raw = client.execute_command("CLUSTER", "INFO")
        except redis.RedisError:
            return {}
        finally:
            client.close()
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {key: value.strip() for key, value in pairs}

    def _assigned(self, port: int) -> bool:
        return self._info(port).get("cluster_slots_assigned") == str(SLOTS)

    def _create(self) -> None:
        """Join the nodes into one cluster, the slots spread evenly, no replicas."""
        tool = require_tool("redis-cli", "install it (apt-get install redis-tools)")
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        command = [tool, "--cluster", "create", *nodes, "--cluster-replicas", "0"]
        command.append("--cluster-yes")
        environment = {"PATH": "/usr/bin:/bin"}
        if self.settings.redis_username:
            command += ["--user", self.settings.redis_username]
        if self.settings.redis_password:  # through the environment: never on a command line
            environment["REDISCLI_AUTH"] = self.settings.redis_password.get_secret_value()
        result = subprocess.run(command, capture_output=True, text=True, env=environment)
        if result.returncode != 0:
            raise ServiceStartError(
                "redis cluster",
                result.stdout[-800:] + result.stderr[-800:],
                str(self.node_dir(self.ports[0]).parent),
            )
