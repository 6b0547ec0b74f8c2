"""Prometheus metrics of the query worker: recstream_query_<what>_<unit>."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

REQUESTS = Counter(
    "recstream_query_requests_total",
    "Requests by outcome: ok, error, overloaded, expired (answered), dead_lettered (no address "
    "to answer), failed (an unexpected error, logged).",
    ["status"],
)
STRATEGIES = Counter(
    "recstream_query_strategy_total",
    "Answered requests by strategy (onboarding + popular = the cold-start share).",
    ["strategy"],
)
END_TO_END_SECONDS = Histogram(
    "recstream_query_end_to_end_seconds",
    "From the request's Kafka timestamp to its response being handed to the producer.",
    buckets=_LATENCY_BUCKETS,
)
SERVICE_SECONDS = Histogram(
    "recstream_query_service_seconds",
    "Time the worker spent computing one answer.",
    buckets=_LATENCY_BUCKETS,
)
CANDIDATES = Histogram(
    "recstream_query_candidates",
    "Candidates scored per request (ANN hits + co-visited items).",
    buckets=(0, 10, 20, 40, 80, 160, 320, 640),
)
CACHE_HITS = Counter(
    "recstream_query_cache_hits_total",
    "Retried requests (same request_id) answered from the cached last response.",
)
ITEMS_RETURNED = Histogram(
    "recstream_query_items_returned",
    "Items in each ok response.",
    buckets=(0, 1, 5, 10, 20, 50, 100),
)
REPLIES_FAILED = Counter(
    "recstream_query_replies_failed_total",
    "Answers that could not be sent, by Kafka error (the request was answered; the answer was "
    "lost on the way).",
    ["error"],
)
LOOP_ERRORS = Counter(
    "recstream_query_loop_errors_total",
    "Turns of the query loop that failed (logged); the loop goes on.",
)
STATE_AGE_SECONDS = Histogram(
    "recstream_query_state_age_seconds",
    "Freshness of personalised answers: answer time minus the time of the newest event the "
    "user's state reflected (event times are the producers' clocks).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400),
)
MODEL_MISMATCH = Counter(
    "recstream_query_model_mismatch_total",
    "Personalised requests whose stored session vector was built in another embedding model's "
    "space than this worker's index (not used: the answer falls back to onboarding/popular).",
)
OTHER_VERSION = Counter(
    "recstream_query_other_version_total",
    "Requests read and left to another pipeline version's workers (the version active when "
    "they were sent answers them; docs/architecture.md, 'Versioned pipelines').",
)
