from __future__ import annotations

from pathlib import Path

import pytest

from recstream.cli import main
from recstream.core.errors import SettingsError
from recstream.core.settings import Settings, load_settings
from recstream.infra.clients import kafka_config


def test_defaults_point_clients_at_the_local_services() -> None:
    settings = load_settings({})
    assert settings.bootstrap_servers == "127.0.0.1:19092"
    assert settings.redis_address == "redis://127.0.0.1:16379/0"
    assert settings.qdrant_embedded_path == settings.state_dir / "qdrant"
    assert settings.topic_partitions()["interactions"] == 12


def test_environment_overrides_and_derived_addresses() -> None:
    settings = load_settings({"RECSTREAM_KAFKA_PORT": "29092", "RECSTREAM_REDIS_PORT": "26379"})
    assert settings.bootstrap_servers == "127.0.0.1:29092"
    assert settings.redis_address == "redis://127.0.0.1:26379/0"
    explicit = load_settings({"RECSTREAM_KAFKA_BOOTSTRAP_SERVERS": "broker-a:9092,broker-b:9092"})
    assert kafka_config(explicit)["bootstrap.servers"] == "broker-a:9092,broker-b:9092"


def test_invalid_value_names_the_variable() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"RECSTREAM_KAFKA_PORT": "not-a-port", "RECSTREAM_PARTITIONS_CATALOG": "0"})
    message = str(caught.value)
    assert "RECSTREAM_KAFKA_PORT" in message
    assert "RECSTREAM_PARTITIONS_CATALOG" in message


def test_unknown_variable_is_refused_with_a_suggestion() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"RECSTREAM_KAFKA_PROT": "1"})
    assert "RECSTREAM_KAFKA_PROT: unknown setting (did you mean RECSTREAM_KAFKA_PORT?)" in str(
        caught.value
    )


def test_a_profile_file_sets_values_under_the_environment(tmp_path: Path) -> None:
    profile = tmp_path / "tuned.env"
    profile.write_text(
        "# written by recstream eval\nRECSTREAM_COVIS_WINDOW=20\n\nRECSTREAM_DIVERSITY=1.0\n"
    )
    settings = load_settings({"RECSTREAM_PROFILE": str(profile), "RECSTREAM_DIVERSITY": "0.5"})
    assert (settings.covis_window, settings.diversity) == (20, 0.5)  # the environment wins
    assert load_settings({}).covis_window != 20  # the profile's value is not the default


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("RECSTREAM_COVIS_WINDW=20\n", "did you mean RECSTREAM_COVIS_WINDOW"),
        ("RECSTREAM_COVIS_WINDOW=-1\n", "RECSTREAM_COVIS_WINDOW"),
        ("covis_window 20\n", ":1: not a RECSTREAM_*=value line"),
        ("RECSTREAM_PROFILE=/elsewhere\n", "cannot name another profile"),
    ],
)
def test_a_bad_profile_is_refused_naming_the_line(tmp_path: Path, text: str, problem: str) -> None:
    profile = tmp_path / "bad.env"
    profile.write_text(text)
    with pytest.raises(SettingsError, match=problem.replace("*", r"\*")):
        load_settings({"RECSTREAM_PROFILE": str(profile)})
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings({"RECSTREAM_PROFILE": str(tmp_path / "missing.env")})


@pytest.mark.parametrize(
    ("value", "problem"),
    [('{"glance": 1000}', "unknown event types"), ('{"view": 0}', "must be > 0 ms")],
)
def test_a_seen_policy_names_known_event_types_and_positive_times(value: str, problem: str) -> None:
    with pytest.raises(SettingsError, match=problem):
        load_settings({"RECSTREAM_SEEN_HIDE_MS": value})
    assert load_settings({"RECSTREAM_SEEN_HIDE_MS": '{"view": 60000}'}).seen_hide_ms == {
        "view": 60_000
    }


def test_secrets_stay_out_of_repr_but_reach_the_client_config() -> None:
    settings = load_settings(
        {
            "RECSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "RECSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "RECSTREAM_KAFKA_SASL_USERNAME": "svc",
            "RECSTREAM_KAFKA_SASL_PASSWORD": "hunter2",
        }
    )
    assert "hunter2" not in repr(settings)
    config = kafka_config(settings)
    assert config["sasl.password"] == "hunter2"
    assert config["security.protocol"] == "SASL_SSL"


def test_cli_reports_invalid_settings_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RECSTREAM_REDIS_PORT", "70000")
    assert main(["infra", "status"]) == 2
    assert "RECSTREAM_REDIS_PORT" in capsys.readouterr().err


def test_settings_survive_the_trip_through_the_environment() -> None:
    original = load_settings(
        {
            "RECSTREAM_KAFKA_SASL_PASSWORD": "s3cret",
            "RECSTREAM_EVENT_WEIGHTS": '{"view": 0.25}',
            "RECSTREAM_QDRANT_PATH": "/tmp/q",
            "RECSTREAM_RATING_CENTER": "2.5",
        }
    )
    assert load_settings(original.to_environment()) == original


def test_an_isolated_copy_prefixes_topics_groups_and_keys() -> None:
    copy = load_settings({}).isolated("tenant7", partitions_requests=2)
    assert copy.topic_partitions() == {
        "tenant7.catalog": 6,
        "tenant7.interactions": 12,
        "tenant7.requests": 2,
        "tenant7.responses": 6,
    }
    assert (copy.redis_namespace, copy.consumer_group) == ("tenant7", "tenant7")


def _documented(readme: str, variables: set[str]) -> tuple[set[str], list[str]]:
    """The variables the README's settings table names, and its names that are none. A row
    may name several as `RECSTREAM_A_B` / `_C` / `_D_E`: each suffix follows some leading words
    of the first name."""
    covered: set[str] = set()
    stale: list[str] = []
    for line in readme.splitlines():
        if not line.startswith("| `RECSTREAM_"):
            continue
        first, *suffixes = (part.strip(" `") for part in line.split("|")[1].split(" / "))
        words = first.split("_")
        for name in [first, *suffixes]:
            spellings = (
                {name}
                if name.startswith("RECSTREAM_")
                else {"_".join(words[:k]) + name for k in range(2, len(words))}
            )
            found = spellings & variables
            covered |= found
            if not found:
                stale.append(name)
    return covered, stale


def test_every_setting_is_in_the_readme_table_and_nothing_else_is() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    variables = {f"RECSTREAM_{name.upper()}" for name in Settings.model_fields}
    covered, stale = _documented(readme, variables)
    assert sorted(variables - covered) == []
    assert stale == []
