from __future__ import annotations

from recstream.core.index import ItemPayload
from recstream.schemas.events import CatalogEvent
from recstream.streams.catalog import plan_catalog_batch
from recstream.streams.text import content_hash, item_text

MODEL = "test-model"


def _event(item: str, t: int, **changes: object) -> CatalogEvent:
    fields: dict[str, object] = {"title": f"Title {item}", "category": "Drama", "tags": ("a",)}
    fields.update(changes)
    return CatalogEvent(f"e-{item}-{t}", item, str(fields.pop("op", "upsert")), t, **fields)  # type: ignore[arg-type]


def _stored(event: CatalogEvent) -> ItemPayload:
    digest = content_hash(item_text(event), MODEL)
    return ItemPayload(
        event.item_id,
        event.title,
        event.category,
        event.tags,
        event.available,
        digest,
        event.event_time,
        event.attributes,
    )


def test_item_text_is_normalised_and_ordered() -> None:
    event = _event(
        "1",
        1,
        title="  Toy\u00a0Story  ",
        tags=("pixar", "kids"),
        description="Two   toys.",
        attributes={"genres": "Animation", "year": 1995},
    )
    assert item_text(event) == (
        "Toy Story Category: Drama. Tags: pixar, kids. Genres: Animation. Two toys."
    )
    assert content_hash("x", "model-a") != content_hash("x", "model-b")


def test_new_and_changed_items_are_embedded_unchanged_ones_are_not() -> None:
    old = _event("1", 100)
    stored = {"1": _stored(old)}
    plan = plan_catalog_batch([_event("1", 200), _event("2", 200), _event("3", 200)], stored, MODEL)
    assert [p.item_id for p, _ in plan.embed] == ["2", "3"]
    assert plan.outcomes == {"unchanged": 1, "embedded": 2}
    changed = plan_catalog_batch([_event("1", 300, title="New title")], stored, MODEL)
    assert [p.title for p, _ in changed.embed] == ["New title"]


def test_availability_change_rewrites_payload_without_embedding() -> None:
    stored = {"1": _stored(_event("1", 100))}
    plan = plan_catalog_batch([_event("1", 200, available=False)], stored, MODEL)
    assert plan.embed == []
    assert [(p.item_id, p.available) for p in plan.rewrite_payload] == [("1", False)]


def test_delete_stale_and_superseded() -> None:
    stored = {"1": _stored(_event("1", 500)), "2": _stored(_event("2", 100))}
    plan = plan_catalog_batch(
        [
            _event("1", 400, op="delete"),
            _event("2", 200, op="delete"),
            _event("3", 10, title="first"),
            _event("3", 20, title="second"),
        ],
        stored,
        MODEL,
    )
    assert [(p.item_id, p.deleted, p.available, p.updated_ms) for p in plan.tombstones] == [
        ("2", True, False, 200)
    ]
    assert [p.title for p, _ in plan.embed] == ["second"]
    assert plan.outcomes == {"stale": 1, "deleted": 1, "embedded": 1, "superseded": 1}


def test_a_delete_leaves_a_tombstone_that_older_upserts_cannot_pass() -> None:
    deleted = plan_catalog_batch([_event("1", 300, op="delete")], {}, MODEL).tombstones
    assert [(p.item_id, p.deleted, p.updated_ms) for p in deleted] == [("1", True, 300)]
    stored = {"1": deleted[0]}
    late = plan_catalog_batch([_event("1", 200)], stored, MODEL)
    assert (late.embed, late.rewrite_payload, late.outcomes) == ([], [], {"stale": 1})
    back = plan_catalog_batch([_event("1", 400)], stored, MODEL)
    assert [(p.item_id, p.deleted) for p, _ in back.embed] == [("1", False)]


def test_an_item_back_after_its_delete_keeps_its_vector_when_its_text_is_unchanged() -> None:
    stored = {"1": _stored(_event("1", 100)).tombstone(200)}
    back = plan_catalog_batch([_event("1", 300)], stored, MODEL)
    assert back.embed == []
    assert [(p.deleted, p.available, p.updated_ms) for p in back.rewrite_payload] == [
        (False, True, 300)
    ]
