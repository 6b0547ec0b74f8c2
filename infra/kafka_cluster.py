"""A real three-node Kafka KRaft cluster on 127.0.0.1 (every node broker and controller), its
client listeners SASL/SCRAM over TLS, replication factor 3 and min.insync.replicas 2: the
staging stack's broker (`recstream staging`). A team runs its own cluster; this one exists so
faults (a broker killed, the controller leader killed) can be injected into a real one."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from recstream.core.settings import Settings
from recstream.infra.errors import PortInUseError, ServiceUnreachableError
from recstream.infra.kafka_server import (
    BrokerSecurity,
    format_storage,
    java_command,
    random_cluster_id,
    secured_listener,
)
from recstream.infra.process import ManagedProcess, has_exited, port_is_free, tail

_MAIN_CLASS = "kafka.Kafka"
REPLICATION = 3
MIN_INSYNC = 2
BROKER_SESSION_TIMEOUT_MS = 6000


@dataclass(frozen=True)
class NodePorts:
    client: int  # SASL_SSL, what recstream's clients use
    internal: int  # inter-broker, plaintext on 127.0.0.1
    controller: int


@dataclass(frozen=True)
class LocalKafkaCluster:
    """Nodes 1..N under `root/node-<id>`; `settings` are a client's of the cluster (their
    bootstrap servers, SASL and TLS options), `security` the brokers' side of the same."""

    root: Path
    settings: Settings
    nodes: tuple[NodePorts, ...]
    security: BrokerSecurity
    libs: Path  # the broker's jars (`fetch_jars`)

    @property
    def node_ids(self) -> list[int]:
        return list(range(1, len(self.nodes) + 1))

    def folder(self, node_id: int) -> Path:
        return self.root / f"node-{node_id}"

    def process(self, node_id: int) -> ManagedProcess:
        config = self.folder(node_id) / "server.properties"
        return ManagedProcess(
            f"kafka-{node_id}",
            config.with_name("kafka.pid"),
            config.with_name("kafka.log"),
            str(config),
        )

    def properties(self, node_id: int) -> str:
        ports = self.nodes[node_id - 1]
        voters = ",".join(
            f"{n}@127.0.0.1:{p.controller}" for n, p in zip(self.node_ids, self.nodes, strict=True)
        )
        internal = f"INTERNAL://127.0.0.1:{ports.internal}"
        lines = {
            "process.roles": "broker,controller",
            "node.id": str(node_id),
            "controller.quorum.voters": voters,
            "listeners": (
                f"CLIENTS://127.0.0.1:{ports.client},{internal},"
                f"CONTROLLER://127.0.0.1:{ports.controller}"
            ),
            "advertised.listeners": f"CLIENTS://127.0.0.1:{ports.client},{internal}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "INTERNAL",
            "listener.security.protocol.map": (
                "CLIENTS:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"
            ),
            "log.dirs": str(self.folder(node_id) / "data"),
            "auto.create.topics.enable": "false",
            "default.replication.factor": str(REPLICATION),
            "min.insync.replicas": str(MIN_INSYNC),
            "unclean.leader.election.enable": "false",
            "offsets.topic.replication.factor": str(REPLICATION),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(REPLICATION),
            "transaction.state.log.min.isr": str(MIN_INSYNC),
            "share.coordinator.state.topic.replication.factor": str(REPLICATION),
            "share.coordinator.state.topic.min.isr": str(MIN_INSYNC),
            "group.initial.rebalance.delay.ms": "0",
            # A broker that stops heartbeating is fenced (its partitions' leadership moves)
            # after this long; Kafka's default (9 s) is most of a producer's pause.
            "broker.session.timeout.ms": str(BROKER_SESSION_TIMEOUT_MS),
            "broker.heartbeat.interval.ms": "1000",
        } | secured_listener(self.security)
        return "".join(f"{key}={value}\n" for key, value in lines.items())

    def start(self, timeout_s: float = 120.0) -> None:
        """Format (once, one cluster id for all) and start every node that is not running, then
        wait until the cluster has all its brokers."""
        libs = self.libs
        unformatted = [n for n in self.node_ids if not self._formatted(n)]
        cluster_id = random_cluster_id(self.settings, libs) if unformatted else ""
        for node_id in unformatted:
            config = self._write_config(node_id)
            format_storage(self.settings, libs, config, cluster_id, self.security, False)
        children = {n: self._spawn(n, libs) for n in self.node_ids if not self.running(n)}
        self.wait_brokers(len(self.nodes), timeout_s, children)

    def stop(self) -> None:
        for node_id in self.node_ids:
            self.process(node_id).stop(timeout_s=60.0)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: a crash, no controlled shutdown."""
        self.process(node_id).kill()

    def restart(self, node_id: int, timeout_s: float = 120.0) -> None:
        child = self._spawn(node_id, self.libs)
        self.wait_brokers(len(self.nodes), timeout_s, {node_id: child})

    def running(self, node_id: int) -> bool:
        return self.process(node_id).running_pid() is not None

    def controller_leader(self) -> int | None:
        """The KRaft quorum's leader as the running nodes' quorum-state files say; None when
        no running node knows one."""
        states = {}
        for node_id in self.node_ids:
            path = self.folder(node_id) / "data" / "__cluster_metadata-0" / "quorum-state"
            try:
                if self.running(node_id):
                    states[node_id] = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue
        return newest_leader(states)

    def wait_brokers(
        self,
        count: int,
        timeout_s: float,
        children: dict[int, subprocess.Popen[bytes]] | None = None,
    ) -> None:
        """Until an Admin client sees `count` brokers; fail early when a node we started exits.
        One client for the whole wait: a new one per look would log in (TLS, SASL) each time."""
        from recstream.infra.clients import admin_client

        admin = admin_client(self.settings)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _broker_count(admin) >= count:
                return
            for node_id, child in (children or {}).items():
                if has_exited(self.process(node_id), child):
                    log = self.process(node_id).log_file
                    raise ServiceUnreachableError(
                        f"kafka node {node_id}", str(log), 0, "exited:\n" + tail(log)
                    )
            time.sleep(0.5)
        raise ServiceUnreachableError(
            "kafka cluster",
            self.settings.bootstrap_servers,
            timeout_s,
            f"fewer than {count} brokers",
        )

    def _formatted(self, node_id: int) -> bool:
        return (self.folder(node_id) / "data" / "meta.properties").exists()

    def _write_config(self, node_id: int) -> Path:
        config = self.folder(node_id) / "server.properties"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(self.properties(node_id))
        return config

    def _spawn(self, node_id: int, libs: Path) -> subprocess.Popen[bytes]:
        ports = self.nodes[node_id - 1]
        for port in (ports.client, ports.internal, ports.controller):
            if not port_is_free(port):
                raise PortInUseError(f"kafka node {node_id}", port, "the staging cluster's ports")
        config = self._write_config(node_id)
        return self.process(node_id).spawn(
            java_command(self.settings, libs, _MAIN_CLASS, str(config))
        )


def bootstrap_servers(nodes: tuple[NodePorts, ...]) -> str:
    return ",".join(f"127.0.0.1:{node.client}" for node in nodes)


def newest_leader(states: dict[int, dict[str, int]]) -> int | None:
    """The leader the newest epoch names among the nodes' quorum states (-1: none known)."""
    known = [(s.get("leaderEpoch", 0), s.get("leaderId", -1)) for s in states.values()]
    known = [(epoch, leader) for epoch, leader in known if leader > 0]
    return max(known)[1] if known else None


def _broker_count(admin: AdminClient) -> int:
    try:
        return len(admin.list_topics(timeout=2).brokers)
    except KafkaException:  # no broker answers yet, or a cluster mid-election: ask again
        return 0
