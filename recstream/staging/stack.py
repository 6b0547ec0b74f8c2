"""The staging stack on 127.0.0.1: a three-node KRaft cluster (SASL/SCRAM over TLS, mTLS,
replication 3, min.insync.replicas 2), Redis serving TLS only with an ACL user and AOF on, a
Prometheus server scraping every role process. Certificates and passwords are made for the run
under its folder (mode 0600), never committed."""

from __future__ import annotations

import secrets
import socket
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from recstream.core.settings import Settings, load_settings
from recstream.infra import redis_server
from recstream.infra.kafka_cluster import LocalKafkaCluster, NodePorts, bootstrap_servers
from recstream.infra.kafka_server import BrokerSecurity, fetch_jars
from recstream.infra.prometheus_server import PrometheusServer
from recstream.infra.redis_server import RedisTLS
from recstream.infra.tls import LocalCA, create_local_ca
from recstream.infra.topology import ROLE_LINES, role_port

KAFKA_USER = "recstream"


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now (held open together so they differ)."""
    with ExitStack() as held:
        probes = [held.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def metrics_base_port(copies: dict[str, int]) -> int:
    """A base port whose role ports (base + 100 per role + copy) are all free; a role that
    `copies` leaves out runs one copy."""
    for base in range(29_000, 60_000, 1000):
        ports = [
            base + 100 * n + c
            for n, role in enumerate(ROLE_LINES)
            for c in range(copies.get(role, 1))
        ]
        if all(_free(port) for port in ports):
            return base
    raise OSError("no free range of metrics ports between 29000 and 60000")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class StagingStack:
    settings: Settings  # a role's settings: the cluster, the Redis, every security option
    kafka: LocalKafkaCluster
    redis_tls: RedisTLS
    prometheus: PrometheusServer

    def start(self) -> None:
        redis_server.start_redis(self.settings, tls=self.redis_tls)
        self.kafka.start()
        self.prometheus.start()

    def stop(self) -> None:
        self.prometheus.stop()
        self.kafka.stop()
        redis_server.stop_redis(self.settings)

    def kill_redis(self) -> None:
        redis_server.redis_process(self.settings).kill()

    def start_redis(self) -> None:
        redis_server.start_redis(self.settings, tls=self.redis_tls)


def secured_client_environment(
    ca: LocalCA, client: str, kafka_password: str, redis_password: str
) -> dict[str, str]:
    """A client's settings for a broker with SASL/SCRAM-SHA-512 over mTLS and a TLS Redis with
    an ACL user (both users named KAFKA_USER), certificates from `ca`."""
    pair = ca.clients[client]
    return {
        "RECSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "RECSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "RECSTREAM_KAFKA_SASL_USERNAME": KAFKA_USER,
        "RECSTREAM_KAFKA_SASL_PASSWORD": kafka_password,
        "RECSTREAM_KAFKA_SSL_CA_LOCATION": str(ca.ca_certificate),
        "RECSTREAM_KAFKA_SSL_CERTIFICATE_LOCATION": str(pair.certificate),
        "RECSTREAM_KAFKA_SSL_KEY_LOCATION": str(pair.key),
        "RECSTREAM_REDIS_USERNAME": KAFKA_USER,
        "RECSTREAM_REDIS_PASSWORD": redis_password,
        "RECSTREAM_REDIS_SSL_CA_LOCATION": str(ca.ca_certificate),
        "RECSTREAM_REDIS_SSL_CERTIFICATE_LOCATION": str(pair.certificate),
        "RECSTREAM_REDIS_SSL_KEY_LOCATION": str(pair.key),
    }


def build_stack(
    root: Path,
    base: Settings,
    copies: dict[str, int],
    overrides: dict[str, str],
    one_process: bool = False,
) -> StagingStack:
    """Certificates, passwords, ports and settings for a staging stack under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    ca = create_local_ca(root / "tls", clients=("recstream",))
    ports = free_ports(11)
    nodes = tuple(NodePorts(*ports[3 * n : 3 * n + 3]) for n in range(3))
    kafka_password, redis_password = secrets.token_hex(16), secrets.token_hex(16)
    redis_port, prometheus_port = ports[9], ports[10]
    metrics_port = metrics_base_port(copies)
    environment = (
        {
            "RECSTREAM_STATE_DIR": str(root),
            "RECSTREAM_KAFKA_PORT": str(nodes[0].client),
            "RECSTREAM_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers(nodes),
            "RECSTREAM_KAFKA_REPLICATION_FACTOR": "3",
            "RECSTREAM_REDIS_PORT": str(redis_port),
            "RECSTREAM_REDIS_URL": f"rediss://127.0.0.1:{redis_port}/0",
            "RECSTREAM_METRICS_PORT": str(metrics_port),
            "RECSTREAM_METRICS_HOST": "127.0.0.1",
        }
        | secured_client_environment(ca, "recstream", kafka_password, redis_password)
        | overrides
    )
    settings = load_settings(base.to_environment() | environment)
    libs = fetch_jars(base)
    security = BrokerSecurity(ca.server.bundle, ca.ca_certificate, 0, {KAFKA_USER: kafka_password})
    targets = {
        f"{role}.{copy + 1}": role_port(settings, role, copy)
        for role in ROLE_LINES
        for copy in range(copies[role])
    }
    if one_process:
        targets = {"all.1": settings.metrics_port}
    return StagingStack(
        settings,
        LocalKafkaCluster(root / "kafka-cluster", settings, nodes, security, libs),
        RedisTLS(ca.server.certificate, ca.server.key, ca.ca_certificate),
        PrometheusServer(root / "prometheus", prometheus_port, targets),
    )
