"""recstream itself under evaluation: the catalog planned and embedded as the catalog processor
does, events applied with the processors' pure `apply_batch`, lists from the production
`Recommender`, over the in-memory store and index (same semantics as Redis and Qdrant)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from recstream.compose import query_config
from recstream.consumers.ranking import RankingWeights
from recstream.consumers.recommender import Recommender
from recstream.core.collab import CollabModel, FixedModel, StateCollab
from recstream.core.index import Vector, collection_name
from recstream.core.ports import Embedder
from recstream.core.settings import Settings, load_settings
from recstream.infra.stores.memory_index import InMemoryVectorIndex
from recstream.infra.stores.memory_store import InMemorySessionStore
from recstream.schemas.events import CatalogEvent, InteractionEvent
from recstream.schemas.requests import RecommendRequest
from recstream.streams.catalog import plan_catalog_batch
from recstream.streams.session import SessionConfig, apply_batch, popularity_landmark

REPLAY_BATCH = 5000  # the interaction processor's default batch size


@dataclass(frozen=True)
class Variant:
    """One configuration of the query side (the session side is fixed by the replay)."""

    name: str
    weights: RankingWeights
    diversity: float  # MMR lambda: 1.0 is plain score order
    covis_candidates: bool = True  # co-visited neighbours of recent items join the candidates
    covis_per_seed: int = Settings.model_fields["covis_per_seed"].default  # read per recent item
    collab_min_history: int | None = None  # use the collaborative space from this many items


def embed_catalog(
    items: Sequence[CatalogEvent], embedder: Embedder, cache_dir: Path
) -> InMemoryVectorIndex:
    """Plan the catalog as the catalog processor does and embed it; vectors are cached on disk by
    content hash (text and model), so a second run embeds only what changed."""
    plan = plan_catalog_batch(items, {}, embedder.model_id)
    cache_file = cache_dir / f"{collection_name(embedder.model_id, embedder.dimension)}.npz"
    cached: dict[str, Vector] = {}
    if cache_file.exists():
        with np.load(cache_file) as stored:
            cached = {key: stored[key] for key in stored.files}
    missing = [(p.content_hash, text) for p, text in plan.embed if p.content_hash not in cached]
    for start in tqdm(range(0, len(missing), 256), desc="embed catalog", unit=" batch"):
        chunk = missing[start : start + 256]
        for (digest, _), vector in zip(chunk, embedder.embed([t for _, t in chunk]), strict=True):
            cached[digest] = vector
    if missing:
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.savez(cache_file, **cached)  # type: ignore[arg-type]
    index = InMemoryVectorIndex(
        collection_name(embedder.model_id, embedder.dimension), embedder.dimension
    )
    index.upsert([(payload, cached[payload.content_hash]) for payload, _ in plan.embed])
    return index


def replay(
    events: Sequence[InteractionEvent],
    index: InMemoryVectorIndex,
    store: InMemorySessionStore,
    config: SessionConfig,
    batch_size: int = REPLAY_BATCH,
    collab: CollabModel | None = None,
) -> None:
    """Apply events in order, batch by batch, exactly as the interaction processor does (folding
    users in against `collab` when given)."""
    records = index.retrieve(sorted({e.item_id for e in events}), with_vectors=True)
    vectors = {i: r.vector for i, r in records.items() if r.vector is not None}
    categories = {i: r.payload.category for i, r in records.items() if r.payload.category}
    for start in range(0, len(events), batch_size):
        batch = events[start : start + batch_size]
        previous = store.popularity_landmark()
        newest = max(e.event_time for e in batch)
        landmark = popularity_landmark(previous, newest, config.landmark_half_life_ms)
        users = {e.user_id for e in batch}
        effects = apply_batch(
            batch,
            store.load_states(users),
            vectors,
            categories,
            config,
            index.collection,
            index.dimension,
            landmark,
            collab,
        )
        store.write_batch(effects, previous)


def install_collab(index: InMemoryVectorIndex, model: CollabModel) -> CollabModel:
    """Put the model's factors into the index's first collaborative slot (what a worker does
    with a staged version), so retrieval fuses both spaces as in serving. Done on every call:
    variants may come with different models, and it costs milliseconds."""
    if index.collab_dimension != model.dimension:
        index.resize_collab(model.dimension)
    index.write_collab(0, dict(zip(model.items, model.factors, strict=True)))
    model.slot = 0
    return model


def recommend_all(
    index: InMemoryVectorIndex,
    store: InMemorySessionStore,
    users: Iterable[str],
    k: int,
    variant: Variant,
    collab: CollabModel | None = None,
) -> dict[str, list[str]]:
    """The production recommender's list for each user (seen items excluded, as served)."""
    config = replace(
        query_config(load_settings({})),
        weights=variant.weights,
        covis_seeds=5 if variant.covis_candidates else 0,
        covis_per_seed=variant.covis_per_seed,
    )
    source = None
    if collab is not None and variant.collab_min_history is not None:
        source = StateCollab(FixedModel(install_collab(index, collab)), variant.collab_min_history)
    recommender = Recommender(index, store, None, config, collab=source)
    lists = {}
    for user in users:
        request = RecommendRequest(uuid.uuid4().hex, k, user_id=user, diversity=variant.diversity)
        lists[user] = [item.item_id for item in recommender.recommend(request).items]
    return lists
