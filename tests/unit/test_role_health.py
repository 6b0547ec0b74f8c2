"""`recstream_role_up`: what /health knows of each role, as a metric the alert rules read."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from recstream.infra.metrics import RoleHealth


def test_a_role_with_a_problem_is_down_and_the_others_up_at_each_scrape() -> None:
    problems: dict[str, str | None] = {"interactions": None, "query": None}
    registry = CollectorRegistry()
    registry.register(RoleHealth(lambda: dict(problems)))
    assert registry.get_sample_value("recstream_role_up", {"role": "query"}) == 1.0
    problems["query"] = "stuck: holding uncommitted records for 61 s"
    assert registry.get_sample_value("recstream_role_up", {"role": "query"}) == 0.0
    assert registry.get_sample_value("recstream_role_up", {"role": "interactions"}) == 1.0
    assert b"# TYPE recstream_role_up gauge" in generate_latest(registry)
