"""The one settings model, read from RECSTREAM_* environment variables in one place."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from recstream.errors import SettingsError

ENV_PREFIX = "RECSTREAM_"
# Variables the environment may carry that are read by other tools, not by the settings model.
_NOT_SETTINGS = frozenset({"RECSTREAM_TEST_KEEP_INFRA"})

Port = Field(ge=1, le=65535)


class Settings(BaseSettings):
    """Every knob of recstream. Unknown RECSTREAM_* variables are refused by `load_settings`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    state_dir: Path = Path(".state")

    kafka_port: int = Field(19092, ge=1, le=65535)
    kafka_controller_port: int = Field(19093, ge=1, le=65535)
    kafka_heap: str = Field("512m", pattern=r"^\d+[kmg]$")
    kafka_start_timeout_s: float = Field(90.0, gt=0)
    kafka_bootstrap_servers: str | None = None
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: Path | None = None
    kafka_replication_factor: int = Field(1, ge=1)

    redis_port: int = Field(16379, ge=1, le=65535)
    redis_url: str | None = Field(None, pattern=r"^rediss?://")
    redis_password: SecretStr | None = None

    qdrant_url: str | None = Field(None, pattern=r"^https?://")
    qdrant_api_key: SecretStr | None = None
    qdrant_path: Path | None = None
    model_path: Path | None = None

    topic_catalog: str = Field("catalog.events", pattern=r"^[A-Za-z0-9._-]{1,200}$")
    topic_interactions: str = Field("interactions", pattern=r"^[A-Za-z0-9._-]{1,200}$")
    topic_requests: str = Field("reco.requests", pattern=r"^[A-Za-z0-9._-]{1,200}$")
    topic_responses: str = Field("reco.responses", pattern=r"^[A-Za-z0-9._-]{1,200}$")
    partitions_catalog: int = Field(6, ge=1, le=1000)
    partitions_interactions: int = Field(12, ge=1, le=1000)
    partitions_requests: int = Field(6, ge=1, le=1000)
    partitions_responses: int = Field(6, ge=1, le=1000)
    dlq_retention_ms: int = Field(7 * 24 * 3600 * 1000, ge=60_000)

    metrics_port: int = Field(9464, ge=0, le=65535)

    @property
    def bootstrap_servers(self) -> str:
        """Where Kafka clients connect: the explicit setting, else the local broker."""
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_address(self) -> str:
        """Redis URL clients use: the explicit setting, else the local server."""
        return self.redis_url or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def qdrant_embedded_path(self) -> Path:
        """Where the embedded Qdrant shard persists when no server URL is set."""
        return self.qdrant_path or self.state_dir / "qdrant"

    def kafka_client_config(self) -> dict[str, Any]:
        """librdkafka settings shared by every producer, consumer and admin client."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            config["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password:
            config["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_ca_location:
            config["ssl.ca.location"] = str(self.kafka_ssl_ca_location)
        return config

    def topic_partitions(self) -> dict[str, int]:
        """Each main topic and the partition count the settings ask for."""
        return {
            self.topic_catalog: self.partitions_catalog,
            self.topic_interactions: self.partitions_interactions,
            self.topic_requests: self.partitions_requests,
            self.topic_responses: self.partitions_responses,
        }


def _unknown_variables(env: Mapping[str, str]) -> list[str]:
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    problems = []
    for key in sorted(env):
        if key.startswith(ENV_PREFIX) and key not in known and key not in _NOT_SETTINGS:
            guess = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {guess[0]}?)" if guess else ""
            problems.append(f"{key}: unknown setting{hint}")
    return problems


def _describe(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        problems.append(f"{ENV_PREFIX}{field.upper()}: {item['msg']}")
    return problems


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read the settings from the environment; raise SettingsError naming each bad variable."""
    environ = os.environ if env is None else env
    problems = _unknown_variables(environ)
    if problems:
        raise SettingsError(problems)
    values = {
        name: environ[ENV_PREFIX + name.upper()]
        for name in Settings.model_fields
        if ENV_PREFIX + name.upper() in environ
    }
    values.update(overrides)
    try:
        # Values are passed explicitly so `env` fully decides; the env source is then not read.
        return Settings.model_validate(values)
    except ValidationError as error:
        raise SettingsError(_describe(error)) from error
