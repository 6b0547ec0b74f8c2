"""Backends chosen by URL scheme (recstream.infra.stores.registry)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from recstream.core.errors import SettingsError
from recstream.core.settings import load_settings
from recstream.infra.stores.qdrant_edge_index import QdrantEdgeIndex
from recstream.infra.stores.registry import (
    Registry,
    index_url,
    open_session_store,
    open_vector_index,
)
from recstream.infra.stores.session_store import RedisSessionStore


def test_a_registered_scheme_opens_with_its_opener_and_an_unknown_one_is_named() -> None:
    things: Registry[Callable[[str], str]] = Registry("thing")

    @things.register("a", "b")
    def _open(url: str) -> str:
        return f"opened {url}"

    assert things.opener("b://x")("b://x") == "opened b://x"
    with pytest.raises(SettingsError, match=r"no thing backend serves c:// \(known: a://, b://\)"):
        things.opener("c://x")


def test_the_redis_url_opens_the_redis_session_store_and_another_scheme_is_refused() -> None:
    for url in ("redis://127.0.0.1:1/0", "rediss://127.0.0.1:1/0"):
        store = open_session_store(load_settings({}, redis_url=url))  # connects on first use
        assert isinstance(store, RedisSessionStore)
        store.close()
    unknown = load_settings({}).model_copy(update={"redis_url": "memcached://127.0.0.1:1"})
    with pytest.raises(SettingsError, match=r"session-store backend serves memcached://"):
        open_session_store(unknown)


def test_without_a_server_url_the_index_is_the_embedded_shard_under_the_qdrant_path(
    tmp_path: Path,
) -> None:
    settings = load_settings({}, qdrant_path=tmp_path)
    assert index_url(settings) == tmp_path.resolve().as_uri()
    index = open_vector_index(settings, "model-x", 8)
    try:
        assert isinstance(index, QdrantEdgeIndex)
        assert (index.collection, index.dimension) == ("items__model-x__8", 8)
        assert (tmp_path / "items__model-x__8").is_dir()
    finally:
        index.close()
    served = load_settings({}, qdrant_url="http://127.0.0.1:6333")
    assert index_url(served) == "http://127.0.0.1:6333"
