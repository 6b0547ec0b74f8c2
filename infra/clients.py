"""Every Kafka and Redis client is configured here, from the settings, and nowhere else.

confluent-kafka producers, consumers and admin clients, faust's aiokafka consumer and producer,
and every Redis client of every role get the same addresses, SASL and TLS options (mTLS
included), timeouts and group membership, so a security setting cannot reach one client and
miss another. `check_kafka` and `check_redis` turn a refused login, a failed TLS handshake or
an unreachable service into one line naming the setting to fix.
"""

from __future__ import annotations

import logging
import re
import ssl
import time
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata

from recstream.core.settings import Settings
from recstream.infra.errors import DeadLetterError, ServiceAuthError, ServiceUnreachableError
from recstream.infra.metrics import CONSUMER_LAG

# librdkafka logs every refused connection; callers that report the failure themselves use this.
QUIET_LOGGER = logging.getLogger("recstream.librdkafka")
QUIET_LOGGER.propagate = False
QUIET_LOGGER.addHandler(logging.NullHandler())

_SASL_SETTINGS = "RECSTREAM_KAFKA_SASL_USERNAME / RECSTREAM_KAFKA_SASL_PASSWORD"
_KAFKA_TLS_SETTINGS = (
    "RECSTREAM_KAFKA_SSL_CA_LOCATION (and RECSTREAM_KAFKA_SSL_CERTIFICATE_LOCATION / "
    "RECSTREAM_KAFKA_SSL_KEY_LOCATION for mTLS)"
)
_REDIS_AUTH_SETTINGS = "RECSTREAM_REDIS_USERNAME / RECSTREAM_REDIS_PASSWORD"
_REDIS_TLS_SETTINGS = "RECSTREAM_REDIS_SSL_CA_LOCATION (and the client certificate settings)"


def kafka_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings shared by every producer, consumer and admin client."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_sasl_mechanism:
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
    if settings.kafka_sasl_username:
        config["sasl.username"] = settings.kafka_sasl_username
    if settings.kafka_sasl_password:
        config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_ssl_ca_location:
        config["ssl.ca.location"] = str(settings.kafka_ssl_ca_location)
    if settings.kafka_ssl_certificate_location:
        config["ssl.certificate.location"] = str(settings.kafka_ssl_certificate_location)
    if settings.kafka_ssl_key_location:
        config["ssl.key.location"] = str(settings.kafka_ssl_key_location)
    if settings.kafka_ssl_key_password:
        config["ssl.key.password"] = settings.kafka_ssl_key_password.get_secret_value()
    if _uses_tls(settings):
        config["ssl.endpoint.identification.algorithm"] = (
            "https" if settings.kafka_ssl_check_hostname else "none"
        )
    return config


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """A group member's settings: the shared ones, the group, and how fast a dead member is
    noticed (session timeout) or recognised on its return (static membership)."""
    config = kafka_config(settings) | {
        "group.id": group_id,
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        "heartbeat.interval.ms": heartbeat_interval_ms(settings),
    }
    if settings.kafka_instance_id:
        config["group.instance.id"] = settings.kafka_instance_id
    return config | overrides


def heartbeat_interval_ms(settings: Settings) -> int:
    """A third of the session timeout, as Kafka recommends."""
    return max(100, settings.kafka_session_timeout_ms // 3)


def _uses_tls(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SSL", "SASL_SSL")


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context aiokafka (faust) uses: the same CA, client certificate and hostname check
    as librdkafka's settings; None without TLS."""
    if not _uses_tls(settings):
        return None
    return _ssl_context(
        settings.kafka_ssl_ca_location,
        settings.kafka_ssl_certificate_location,
        settings.kafka_ssl_key_location,
        settings.kafka_ssl_key_password.get_secret_value()
        if settings.kafka_ssl_key_password
        else None,
        settings.kafka_ssl_check_hostname,
    )


def _ssl_context(
    ca: Any, certificate: Any, key: Any, key_password: str | None, check_hostname: bool
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    context.check_hostname = check_hostname
    if certificate:
        context.load_cert_chain(str(certificate), str(key) if key else None, key_password)
    return context


def faust_options(settings: Settings) -> dict[str, Any]:
    """faust.App keyword arguments for the broker: the same servers, credentials, TLS, session
    timeout and static membership as the confluent-kafka clients."""
    import faust  # only the catalog role's process needs faust

    context = kafka_ssl_context(settings)
    credentials: Any = None
    if settings.kafka_security_protocol.startswith("SASL"):
        credentials = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value()
            if settings.kafka_sasl_password
            else None,
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism or "PLAIN",
        )
    elif context is not None:
        credentials = faust.SSLCredentials(context)
    servers = [f"kafka://{server}" for server in settings.bootstrap_servers.split(",")]
    return {
        "broker": servers,
        "broker_credentials": credentials,
        "broker_session_timeout": settings.kafka_session_timeout_ms / 1000,
        "broker_heartbeat_interval": heartbeat_interval_ms(settings) / 1000,
        "consumer_group_instance_id": settings.kafka_instance_id,
    }


def admin_client(settings: Settings, **overrides: Any) -> AdminClient:
    return AdminClient(kafka_config(settings) | {"logger": QUIET_LOGGER} | overrides)


class KafkaProbe:
    """Whether Kafka answers a metadata request, on one Admin client kept for the process's
    life (its connections too): a new client per probe pays a TLS handshake and a SASL login
    every time, which a loaded machine may not finish within the probe's timeout."""

    def __init__(self, settings: Settings, timeout_s: float = 1.0) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        self._admin: AdminClient | None = None

    def __call__(self) -> bool:
        if self._admin is None:
            self._admin = admin_client(self._settings)
        try:
            return bool(self._admin.list_topics(timeout=self._timeout_s).brokers)
        except KafkaException:
            return False


def cluster_metadata(admin: AdminClient, settings: Settings, timeout_s: float) -> ClusterMetadata:
    """Metadata of the cluster, or ServiceUnreachableError naming the bootstrap servers."""
    try:
        return admin.list_topics(timeout=timeout_s)
    except KafkaException as error:
        raise ServiceUnreachableError(
            "kafka",
            settings.bootstrap_servers,
            timeout_s,
            f"{error.args[0].str()} (is it up? `recstream infra up`)",
        ) from error


_BROKER_ADDRESS = re.compile(r"\b[a-z_]+://\S+", re.IGNORECASE)


class _LoginErrors:
    """librdkafka's error callback (served by poll): the last error that means our credentials
    or our TLS were refused, as opposed to a broker that is away."""

    def __init__(self) -> None:
        self.kind: str | None = None

    def __call__(self, error: KafkaError) -> None:
        # Without the broker addresses: "sasl_ssl://host:port" says nothing about TLS failing.
        text = _BROKER_ADDRESS.sub("", error.str()).lower()
        if error.code() == KafkaError._AUTHENTICATION:
            self.kind = "sasl"
        elif error.code() == KafkaError._SSL or "ssl" in text or "certificate" in text:
            self.kind = "tls"


def check_kafka(settings: Settings, timeout_s: float = 10.0) -> None:
    """Raise a one-line error when Kafka cannot be used with these settings: refused
    credentials or TLS (as soon as the broker says so), or no answer within timeout_s."""
    refused = _LoginErrors()
    admin = admin_client(settings, error_cb=refused)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if admin.list_topics(timeout=min(1.0, timeout_s)).brokers:
                return
        except KafkaException:
            admin.poll(0)  # serves the error callback
        if refused.kind is not None or time.monotonic() >= deadline:
            raise _kafka_failure(settings, refused.kind, timeout_s)


def _kafka_failure(settings: Settings, refused: str | None, timeout_s: float) -> Exception:
    address = settings.bootstrap_servers
    if refused == "sasl":
        return ServiceAuthError("kafka", address, "SASL login refused", _SASL_SETTINGS)
    if refused == "tls":
        return ServiceAuthError("kafka", address, "TLS handshake failed", _KAFKA_TLS_SETTINGS)
    detail = "no metadata (is it up? `recstream infra up`; RECSTREAM_KAFKA_BOOTSTRAP_SERVERS)"
    return ServiceUnreachableError("kafka", address, timeout_s, detail)


CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def is_cluster(settings: Settings) -> bool:
    """Whether RECSTREAM_REDIS_URL names a Redis Cluster (redis+cluster://, rediss+cluster://)."""
    return urlsplit(settings.redis_address).scheme in CLUSTER_SCHEMES


def redis_client(settings: Settings, **options: Any) -> redis.Redis[bytes]:
    """A Redis client for the settings' server: URL, ACL user and password, TLS (rediss://)
    with CA and client certificate. `options` go to redis-py (timeouts, decoding). For a
    cluster URL, redis-py's cluster client: it finds every node from the one named, and sends
    each command to the node serving its keys' slot."""
    scheme = urlsplit(settings.redis_address).scheme
    tls: dict[str, Any] = {}
    if scheme.startswith("rediss"):
        tls = {
            "ssl_ca_certs": _str(settings.redis_ssl_ca_location),
            "ssl_certfile": _str(settings.redis_ssl_certificate_location),
            "ssl_keyfile": _str(settings.redis_ssl_key_location),
            "ssl_check_hostname": settings.redis_ssl_check_hostname,
        }
    credentials: dict[str, Any] = {}
    if settings.redis_username:
        credentials["username"] = settings.redis_username
    if settings.redis_password:
        credentials["password"] = settings.redis_password.get_secret_value()
    if scheme in CLUSTER_SCHEMES:
        url = settings.redis_address.replace("+cluster://", "://", 1)
        cluster: redis.RedisCluster[bytes] = redis.RedisCluster.from_url(
            url, **credentials, **tls, **options
        )
        # The cluster client takes the commands the stores send; typed as one client for all.
        return cast("redis.Redis[bytes]", cluster)
    return redis.Redis.from_url(settings.redis_address, **credentials, **tls, **options)


def _str(value: object | None) -> str | None:
    return None if value is None else str(value)


def check_redis(settings: Settings, timeout_s: float = 5.0) -> None:
    """Raise a one-line error when Redis refuses these credentials, fails TLS, or does not
    answer within timeout_s."""
    address = redact_url(settings.redis_address)
    try:
        # A cluster client asks for the cluster's nodes as it is made: it may fail here already.
        client = redis_client(settings, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    except redis.exceptions.RedisClusterException as error:
        raise _cluster_failure(error, address, timeout_s) from None
    try:
        client.ping()
    except redis.AuthenticationError:
        raise ServiceAuthError(
            "redis", address, "credentials refused", _REDIS_AUTH_SETTINGS
        ) from None
    except redis.ResponseError as error:  # e.g. NOAUTH: the server wants a password
        if "auth" not in str(error).lower():
            raise
        raise ServiceAuthError("redis", address, str(error), _REDIS_AUTH_SETTINGS) from None
    except redis.ConnectionError as error:
        if isinstance(error.__context__, ssl.SSLError) or "ssl" in str(error).lower():
            raise ServiceAuthError(
                "redis", address, "TLS handshake failed", _REDIS_TLS_SETTINGS
            ) from None
        raise ServiceUnreachableError(
            "redis", address, timeout_s, "no answer (is it up? RECSTREAM_REDIS_URL)"
        ) from None
    finally:
        client.close()


def _cluster_failure(error: Exception, address: str, timeout_s: float) -> Exception:
    """The one-line error for a cluster whose nodes could not be asked for the topology."""
    if "auth" in str(error).lower():
        return ServiceAuthError("redis", address, "credentials refused", _REDIS_AUTH_SETTINGS)
    detail = "no node answers (is it up? RECSTREAM_REDIS_URL)"
    return ServiceUnreachableError("redis", address, timeout_s, detail)


def redact_url(url: str) -> str:
    """The URL without its password, for logs and CLI output."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***" if parts.username else ":***"
    host = parts.hostname or ""
    netloc = f"{user}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


# Redis error replies that mean "the server cannot take this client's writes now" (full,
# busy, a replica, or an ACL that refuses us: the operator's to fix), not "this write is bad".
_REDIS_SERVER_ERRORS = (
    redis.exceptions.OutOfMemoryError,  # type: ignore[attr-defined]  # types-redis lags
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.NoPermissionError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.MasterDownError,
)
_REDIS_SERVER_REPLIES = ("BUSY", "OOM", "NOPERM", "READONLY", "LOADING")


def is_outage(error: BaseException) -> bool:
    """Whether a failure is the infrastructure's (retry until it answers) rather than the
    records' (isolate the records that cause it): an unreachable or overloaded Redis, Kafka or
    Qdrant server, or dead letters that could not be delivered."""
    if isinstance(error, redis.ResponseError):
        return isinstance(error, _REDIS_SERVER_ERRORS) or str(error).startswith(
            _REDIS_SERVER_REPLIES
        )
    if isinstance(error, redis.RedisError | DeadLetterError | ConnectionError | TimeoutError):
        return True
    if isinstance(error, KafkaException):
        kafka_error = error.args[0] if error.args else None
        return isinstance(kafka_error, KafkaError) and bool(
            kafka_error.retriable() or kafka_error.code() in _KAFKA_OUTAGES
        )
    return type(error).__module__.startswith(("httpx", "httpcore", "qdrant_client.http"))


_KAFKA_OUTAGES = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.REQUEST_TIMED_OUT,
        # A partition between leaders: a topic just made, a broker restarting.
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
    }
)


STATISTICS_INTERVAL_MS = 5000


def lag_statistics(role: str) -> dict[str, Any]:
    """Consumer settings that report the role's lag to CONSUMER_LAG from librdkafka's
    statistics (stats_cb runs inside poll, in the consumer's own thread)."""

    def report(raw: str) -> None:
        stats = orjson.loads(raw)
        lag = 0
        for topic in stats.get("topics", {}).values():
            for partition in topic.get("partitions", {}).values():
                if partition.get("consumer_lag", -1) > 0 and partition.get("partition", -1) >= 0:
                    lag += partition["consumer_lag"]
        CONSUMER_LAG.labels(role).set(lag)

    return {"statistics.interval.ms": STATISTICS_INTERVAL_MS, "stats_cb": report}
