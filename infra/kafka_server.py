"""A real single-node Apache Kafka 4.x broker (KRaft, combined mode) from Maven Central jars."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException

from recstream.core.settings import Settings
from recstream.infra.clients import admin_client
from recstream.infra.errors import PortInUseError, ServiceStartError, ServiceUnreachableError
from recstream.infra.process import ManagedProcess, has_exited, port_is_free, require_tool, tail

_RESOURCES = Path(__file__).parent / "kafka"
_MAIN_CLASS = "kafka.Kafka"
_STORAGE_TOOL = "kafka.tools.StorageTool"
_JAVA_HINT = "install a Java 17+ runtime (apt-get install openjdk-17-jre-headless)"


@dataclass(frozen=True)
class KafkaLayout:
    """Where the broker's jars, config, data and logs live under the state directory."""

    root: Path

    @property
    def libs(self) -> Path:
        return self.root / "libs"

    @property
    def config(self) -> Path:
        return self.root / "server.properties"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def process(self) -> ManagedProcess:
        # The config path in the command line tells our broker apart from any other JVM.
        return ManagedProcess(
            "kafka", self.root / "kafka.pid", self.root / "kafka.log", str(self.config)
        )


def layout(settings: Settings) -> KafkaLayout:
    return KafkaLayout(settings.state_dir.resolve() / "kafka")


def fetch_jars(settings: Settings) -> Path:
    """Copy the broker's runtime jars from Maven Central (or ~/.m2) into the state directory.

    Maven writes into a fresh temporary folder that is renamed into place at the end, so an
    interrupted or concurrent fetch never leaves a half-filled libs folder behind.
    """
    libs = layout(settings).libs
    if any(libs.glob("kafka_2.13-*.jar")):
        return libs
    mvn = require_tool("mvn", "install Maven (apt-get install maven); `make setup` does")
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(_RESOURCES / "pom.xml"),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise ServiceStartError(
            "kafka",
            f"mvn could not fetch the broker jars:\n{result.stdout}{result.stderr}",
            str(_RESOURCES / "pom.xml"),
        )
    try:
        staging.rename(libs)
    except OSError:  # another fetch finished first; its jars are as good as ours
        shutil.rmtree(staging, ignore_errors=True)
    return libs


@dataclass(frozen=True)
class BrokerSecurity:
    """A secured client listener on RECSTREAM_KAFKA_PORT: SASL/SCRAM over TLS, with client
    certificates required when `require_client_certificate` (mTLS). The broker's own traffic
    (controller, inter-broker) stays on plaintext listeners bound to 127.0.0.1."""

    keystore_pem: Path  # the server's private key and certificate chain in one PEM file
    truststore_pem: Path  # the CA that signs client certificates
    internal_port: int  # the inter-broker listener
    scram_users: dict[str, str]  # name -> password, created when the storage is formatted
    mechanism: str = "SCRAM-SHA-512"
    require_client_certificate: bool = True


def secured_listener(security: BrokerSecurity) -> dict[str, str]:
    prefix = "listener.name.clients."
    mechanism = security.mechanism.lower()
    return {
        "sasl.enabled.mechanisms": security.mechanism,
        f"{prefix}{mechanism}.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        f"{prefix}ssl.keystore.type": "PEM",
        f"{prefix}ssl.keystore.location": str(security.keystore_pem),
        f"{prefix}ssl.truststore.type": "PEM",
        f"{prefix}ssl.truststore.location": str(security.truststore_pem),
        f"{prefix}ssl.client.auth": "required" if security.require_client_certificate else "none",
    }


def server_properties(
    settings: Settings, data_dir: Path, security: BrokerSecurity | None = None
) -> str:
    """The broker's config: one node that is both broker and KRaft controller."""
    port, cport = settings.kafka_port, settings.kafka_controller_port
    lines = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{cport}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        # Topics come from `recstream topics create`; a typo must not create a topic silently.
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    if security is not None:
        internal = f"INTERNAL://127.0.0.1:{security.internal_port}"
        lines |= {
            "listeners": f"CLIENTS://127.0.0.1:{port},{internal},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"CLIENTS://127.0.0.1:{port},{internal}",
            "inter.broker.listener.name": "INTERNAL",
            "listener.security.protocol.map": (
                "CLIENTS:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"
            ),
        } | secured_listener(security)
    return "".join(f"{key}={value}\n" for key, value in lines.items())


def java_command(settings: Settings, libs: Path, main_class: str, *args: str) -> list[str]:
    java = require_tool("java", _JAVA_HINT)
    return [
        java,
        f"-Xmx{settings.kafka_heap}",
        "-Xms128m",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={_RESOURCES / 'log4j2.properties'}",
        "-cp",
        f"{libs}/*",
        main_class,
        *args,
    ]


def random_cluster_id(settings: Settings, libs: Path) -> str:
    """A new KRaft cluster id from the storage tool."""
    command = java_command(settings, libs, _STORAGE_TOOL, "random-uuid")
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return result.stdout.strip().splitlines()[-1]


def format_storage(
    settings: Settings,
    libs: Path,
    config: Path,
    cluster_id: str,
    security: BrokerSecurity | None = None,
    standalone: bool = True,
) -> None:
    """Format a node's log dirs for `cluster_id` (a single node as its own quorum when
    `standalone`; otherwise the config's static controller.quorum.voters)."""
    arguments = ["format", "-t", cluster_id, "-c", str(config)]
    arguments += ["--standalone"] if standalone else []
    result = subprocess.run(
        java_command(settings, libs, _STORAGE_TOOL, *arguments, *scram_arguments(security)),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ServiceStartError(
            "kafka", f"storage format failed: {result.stderr or result.stdout}", str(config)
        )


def scram_arguments(security: BrokerSecurity | None) -> list[str]:
    """The storage tool's --add-scram arguments: SCRAM users exist from the first start
    (KIP-900), before any client can log in to create them."""
    if security is None:
        return []
    arguments = []
    for name, password in security.scram_users.items():
        arguments += ["--add-scram", f"{security.mechanism}=[name={name},password={password}]"]
    return arguments


def kafka_answers(settings: Settings, timeout_s: float = 2.0) -> bool:
    """True when an Admin client gets cluster metadata."""
    try:
        metadata = admin_client(settings).list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return bool(metadata.brokers)


def wait_for_kafka(
    settings: Settings,
    timeout_s: float,
    process: ManagedProcess | None = None,
    child: subprocess.Popen[bytes] | None = None,
) -> None:
    """Block until the broker answers; fail early if our process died, or after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if kafka_answers(settings, timeout_s=min(2.0, max(0.1, deadline - time.monotonic()))):
            return
        if process is not None and has_exited(process, child):
            raise ServiceStartError(
                "kafka", "the broker exited:\n" + tail(process.log_file), str(process.log_file)
            )
        time.sleep(0.2)
    raise ServiceUnreachableError(
        "kafka", settings.bootstrap_servers, timeout_s, "no metadata from an Admin client"
    )


def start_kafka(settings: Settings, security: BrokerSecurity | None = None) -> bool:
    """Start the broker unless ours already runs; True when this call started it. With
    `security`, its client listener is SASL_SSL (the settings are then a client's of it)."""
    kafka = layout(settings)
    if kafka.process.running_pid() is not None:
        wait_for_kafka(settings, settings.kafka_start_timeout_s, kafka.process)
        return False
    require_tool("java", _JAVA_HINT)
    ports = [
        (settings.kafka_port, "RECSTREAM_KAFKA_PORT"),
        (settings.kafka_controller_port, "RECSTREAM_KAFKA_CONTROLLER_PORT"),
    ]
    if security is not None:
        ports.append((security.internal_port, "the secured broker's internal port"))
    for port, name in ports:
        if not port_is_free(port):
            raise PortInUseError("kafka", port, name)
    command = java_command(settings, fetch_jars(settings), _MAIN_CLASS, str(kafka.config))
    kafka.data.mkdir(parents=True, exist_ok=True)
    kafka.config.write_text(server_properties(settings, kafka.data, security))
    if not (kafka.data / "meta.properties").exists():
        format_storage(
            settings, kafka.libs, kafka.config, random_cluster_id(settings, kafka.libs), security
        )
    child = kafka.process.spawn(command)
    wait_for_kafka(settings, settings.kafka_start_timeout_s, kafka.process, child)
    return True


def stop_kafka(settings: Settings) -> bool:
    """Stop the broker we started (by pid file); False when none of ours was running."""
    return layout(settings).process.stop(timeout_s=60.0)
