"""`recstream infra up | down | status`: the local Kafka broker and Redis server together."""

from __future__ import annotations

from dataclasses import dataclass

from recstream.core.settings import Settings
from recstream.infra import kafka_server, redis_server
from recstream.infra.clients import redact_url


@dataclass(frozen=True)
class ServiceState:
    name: str
    pid: int | None
    address: str
    log_file: str
    answering: bool
    started_now: bool = False

    def state(self) -> str:
        if self.pid is None:
            return "answering (not started by us)" if self.answering else "stopped"
        how = "started" if self.started_now else "running"
        return f"{how}, pid {self.pid}" + ("" if self.answering else ", NOT answering")

    def describe(self) -> str:
        return f"{self.name:<6} {self.state():<28} {self.address:<28} log: {self.log_file}"

    def row(self) -> list[str]:
        return [self.name, self.state(), self.address, self.log_file]

    def as_dict(self) -> dict[str, object]:
        return {
            "service": self.name,
            "pid": self.pid,
            "address": self.address,
            "answering": self.answering,
            "log": self.log_file,
        }


def up(settings: Settings) -> list[ServiceState]:
    """Start Redis then Kafka (each only if ours is not already running), wait until both answer."""
    redis_started = redis_server.start_redis(settings)
    kafka_started = kafka_server.start_kafka(settings)
    return status(settings, started={"redis": redis_started, "kafka": kafka_started})


def down(settings: Settings) -> list[str]:
    """Stop only what we started; returns the names of the services stopped."""
    stopped = []
    if kafka_server.stop_kafka(settings):
        stopped.append("kafka")
    if redis_server.stop_redis(settings):
        stopped.append("redis")
    return stopped


def status(settings: Settings, started: dict[str, bool] | None = None) -> list[ServiceState]:
    started = started or {}
    kafka = kafka_server.layout(settings).process
    redis = redis_server.redis_process(settings)
    return [
        ServiceState(
            "kafka",
            kafka.running_pid(),
            settings.bootstrap_servers,
            str(kafka.log_file),
            kafka_server.kafka_answers(settings, timeout_s=2.0),
            started.get("kafka", False),
        ),
        ServiceState(
            "redis",
            redis.running_pid(),
            redact_url(settings.redis_address),  # a password in the URL is never printed
            str(redis.log_file),
            redis_server.redis_answers(settings),
            started.get("redis", False),
        ),
    ]
