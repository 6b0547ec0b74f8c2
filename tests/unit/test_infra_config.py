from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from recstream.core.settings import Settings, load_settings
from recstream.infra import redis_server
from recstream.infra.kafka_server import server_properties
from recstream.infra.topics import dlq_topic, planned_topics, vector_topic


def test_server_properties_use_the_configured_ports_and_kraft_combined_mode() -> None:
    settings = load_settings(
        {"RECSTREAM_KAFKA_PORT": "29092", "RECSTREAM_KAFKA_CONTROLLER_PORT": "29093"}
    )
    lines = dict(
        line.split("=", 1) for line in server_properties(settings, Path("/data")).splitlines()
    )
    assert lines["process.roles"] == "broker,controller"
    assert lines["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert lines["controller.quorum.bootstrap.servers"] == "127.0.0.1:29093"
    assert lines["log.dirs"] == "/data"
    assert lines["offsets.topic.replication.factor"] == "1"


def test_every_input_topic_has_a_single_partition_dlq_with_retention() -> None:
    settings = load_settings({"RECSTREAM_DLQ_RETENTION_MS": "3600000"})
    specs = {spec.name: spec for spec in planned_topics(settings)}
    assert len(specs) == 9  # four main topics and their DLQs, and the vector topic
    assert specs["interactions"].partitions == 12
    dlq = specs[dlq_topic("interactions")]
    assert dlq.partitions == 1
    assert dlq.config == {"retention.ms": "3600000"}
    assert dlq_topic(vector_topic(settings)) not in specs


def test_the_logs_state_is_rebuilt_from_are_compacted_or_kept_for_the_replay_window() -> None:
    settings = load_settings({"RECSTREAM_INTERACTIONS_RETENTION_MS": "7200000"})
    specs = {spec.name: spec for spec in planned_topics(settings)}
    assert vector_topic(settings) == "items.vectors.all-minilm-l6-v2"
    assert specs["catalog.events"].config == {"cleanup.policy": "compact"}
    vectors = specs[vector_topic(settings)]
    assert vectors.config == {"cleanup.policy": "compact"}
    assert vectors.partitions == settings.partitions_catalog  # keyed by item, like the catalog
    assert specs["interactions"].config == {"retention.ms": "7200000"}
    assert specs["reco.requests"].config == {}


def _settings_in(state_dir: Path, **env: str) -> Settings:
    return load_settings({"RECSTREAM_STATE_DIR": str(state_dir)} | env)


def test_without_a_working_compiler_redis_gets_no_write_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis still starts, and the store writes with the Lua script."""
    settings = _settings_in(tmp_path)
    failing = shutil.which("false")  # a "compiler" that always fails
    monkeypatch.setattr(redis_server.shutil, "which", lambda _: None)
    assert redis_server.write_module(settings) is None
    monkeypatch.setattr(redis_server.shutil, "which", lambda _: failing)
    assert redis_server.write_module(settings) is None
    assert "write module failed" in caplog.text


def test_switched_off_no_module_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings_in(tmp_path, RECSTREAM_REDIS_WRITE_MODULE="false")
    monkeypatch.setattr(redis_server.shutil, "which", lambda _: pytest.fail("compiler looked up"))
    assert redis_server.write_module(settings) is None


def test_a_pipeline_version_has_state_topics_and_groups_of_its_own_but_shares_the_requests() -> (
    None
):
    base = load_settings({})
    v2 = load_settings({"RECSTREAM_PIPELINE_VERSION": "v2"})
    assert (base.state_namespace, base.processing_group) == ("rs", "recstream")
    assert (v2.state_namespace, v2.processing_group) == ("rs-v2", "recstream-v2")
    assert vector_topic(v2) == "items.vectors.all-minilm-l6-v2.v2"
    inputs = {base.topic_catalog, base.topic_interactions, base.topic_requests}
    assert inputs <= {spec.name for spec in planned_topics(v2)}  # the logs are shared
