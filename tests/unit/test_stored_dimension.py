"""A worker that does not embed reads the model's dimension from the collection's name."""

from __future__ import annotations

from pathlib import Path

from recstream.core.index import collection_name
from recstream.core.settings import load_settings
from recstream.infra.stores.registry import stored_dimension


def test_the_dimension_comes_from_the_one_collection_of_the_model(tmp_path: Path) -> None:
    settings = load_settings({"RECSTREAM_QDRANT_PATH": str(tmp_path)})
    assert stored_dimension(settings, "all-MiniLM-L6-v2") is None  # nothing embedded yet
    (tmp_path / collection_name("all-MiniLM-L6-v2", 384)).mkdir()
    (tmp_path / collection_name("other-model", 768)).mkdir()
    assert stored_dimension(settings, "all-MiniLM-L6-v2") == 384
    (tmp_path / collection_name("all-MiniLM-L6-v2", 512)).mkdir()
    assert stored_dimension(settings, "all-MiniLM-L6-v2") is None  # ambiguous: load the model
    server = load_settings(
        {"RECSTREAM_QDRANT_PATH": str(tmp_path), "RECSTREAM_QDRANT_URL": "http://qdrant:6333"}
    )
    assert stored_dimension(server, "other-model") is None
