"""Collaborative-space benchmark (a benchmark, not a test: it asserts nothing).

1. Training on MovieLens ml-latest-small: building the users' histories from the 100,836 ratings
   and fitting implicit ALS (the `recstream train` maths), wall time and peak RSS growth.
2. Fold-in cost: the interaction processor's pure batch step (`apply_batch`) over the same Zipf
   event stream as bench/ingest.py, with and without a collaborative model, so the difference is
   the fold-in cost per event and the ratio is its effect on the processor's events/s.
   Baseline in the same run: the same batches without the model.
3. Retrieval in embedded Qdrant over items with a content vector and a collaborative slot: the
   fused query (content and collab prefetch, reciprocal-rank fusion, one call) against a
   content-only search, and against a content search plus a brute-force numpy pass over all
   item factors (how serving found collab candidates before the slots); and the time to install
   a version (write every item's factor into a slot).

Prints one JSON object; docs/benchmarks.md records the figures with the machine.
"""

from __future__ import annotations

import argparse
import platform
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from recstream.compose import als_params, session_config
from recstream.core.collab import CollabModel
from recstream.core.index import ItemPayload, SearchFilter
from recstream.core.settings import DEFAULT_EVENT_WEIGHTS, load_settings
from recstream.core.state import UserState
from recstream.datasets import movielens_dir
from recstream.infra.stores.qdrant_edge_index import QdrantEdgeIndex
from recstream.movielens import rating_events
from recstream.schemas.events import InteractionEvent
from recstream.streams import kernels
from recstream.streams.collab import fit_als, user_histories
from recstream.streams.session import apply_batch

DIM = 384
TYPES = ["view", "view", "view", "click", "click", "add_to_cart", "purchase", "like", "dislike"]


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_training(folder: Path, factors: int) -> dict[str, Any]:
    events = rating_events(folder)
    rss_before = _rss_mib()
    started = time.perf_counter()
    histories = user_histories(events, DEFAULT_EVENT_WEIGHTS)
    items = sorted({i for h in histories.values() for i in h})
    histories_s = time.perf_counter() - started
    started = time.perf_counter()
    fit_als(histories, items, replace(als_params(load_settings({})), factors=factors), version=1)
    return {
        "events": len(events),
        "users": len(histories),
        "items": len(items),
        "factors": factors,
        "histories_s": round(histories_s, 3),
        "fit_s": round(time.perf_counter() - started, 3),
        "peak_rss_growth_mib": round(_rss_mib() - rss_before, 1),
    }


def _stream(events: int, users: int, items: int) -> list[InteractionEvent]:
    rng = np.random.default_rng(1)
    user_ids = np.minimum(rng.zipf(1.1, size=events), users) - 1
    item_ids = np.minimum(rng.zipf(1.1, size=events), items) - 1
    kinds = rng.integers(0, len(TYPES), size=events)
    start = 1_700_000_000_000
    return [
        InteractionEvent(f"e{n}", f"u{u}", f"i{i}", TYPES[k], start + n)
        for n, (u, i, k) in enumerate(zip(user_ids, item_ids, kinds, strict=True))
    ]


def _apply_all(
    stream: list[InteractionEvent],
    vectors: dict[str, np.ndarray],
    collab: CollabModel | None,
    batch: int,
) -> tuple[float, float]:
    """Seconds for the whole stream, and the part spent folding in."""
    config = session_config(load_settings({}))
    states: dict[str, UserState] = {}
    total, fold = 0.0, 0.0
    for start in range(0, len(stream), batch):
        chunk = stream[start : start + batch]
        began = time.perf_counter()
        landmark = chunk[0].event_time  # forward-decay landmark near the events, as in service
        effects = apply_batch(chunk, states, vectors, {}, config, "m", DIM, landmark, collab)
        total += time.perf_counter() - began
        fold += effects.fold_in_seconds
        states.update(effects.states)
    return total, fold


def bench_fold_in(events: int, users: int, items: int, factors: int, batch: int) -> dict[str, Any]:
    rng = np.random.default_rng(2)
    vectors = {}
    for n in range(items):
        v = rng.normal(size=DIM).astype(np.float32)
        vectors[f"i{n}"] = v / np.linalg.norm(v)
    model = CollabModel(
        1,
        [f"i{n}" for n in range(items)],
        (rng.normal(size=(items, factors)) * 0.1).astype(np.float32),
        0.1,
        1.0,
    )
    stream = _stream(events, users, items)
    kernels.warm_up()  # as the worker does: compiling (or loading) the pass is not a batch's cost
    without, _ = _apply_all(stream, vectors, None, batch)
    with_model, fold = _apply_all(stream, vectors, model, batch)
    return {
        "events": events,
        "users": users,
        "items": items,
        "factors": factors,
        "batch": batch,
        "apply_events_per_s_without": round(events / without),
        "apply_events_per_s_with": round(events / with_model),
        "ratio": round(without / with_model, 3),
        "fold_in_us_per_event": round(fold / events * 1e6, 1),
    }


def _per_query_us(run: Callable[[int], object], queries: int) -> float:
    for n in range(queries):  # warm up: the index's memo of decoded vectors fills, as in serving
        run(n)
    started = time.perf_counter()
    for n in range(queries):
        run(n)
    return (time.perf_counter() - started) / queries * 1e6


def bench_retrieval(items: int, factors: int, limit: int, queries: int = 300) -> dict[str, Any]:
    rng = np.random.default_rng(6)
    content = rng.normal(size=(items, DIM)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    item_factors = (rng.normal(size=(items, factors)) * 0.1).astype(np.float32)
    users = (rng.normal(size=(queries, factors))).astype(np.float32)
    ids = [f"i{n}" for n in range(items)]
    flt = SearchFilter()
    with tempfile.TemporaryDirectory() as folder:
        index = QdrantEdgeIndex.open(
            Path(folder), "bench", DIM, cache_vectors=50_000, collab_dimension=factors
        )
        for start in range(0, items, 2000):
            end = min(items, start + 2000)
            index.upsert(
                [
                    (ItemPayload(ids[n], "", None, (), True, "h", 1), content[n])
                    for n in range(start, end)
                ]
            )
        started = time.perf_counter()
        index.write_collab(0, dict(zip(ids, item_factors, strict=True)))
        install_s = time.perf_counter() - started
        index.optimize()

        # As serving asks: with content vectors (for ranking), and the collab-only items of the
        # numpy way read back from the index (payloads and vectors) as the recommender did.
        def content_only(n: int) -> object:
            return index.search(content[n], limit, flt, with_vectors=True)

        def fused(n: int) -> object:
            return index.search_blend(content[n], users[n], 0, limit, flt, with_vectors=True)

        def numpy_pass(n: int) -> object:
            hits = index.search(content[n], limit, flt, with_vectors=True)
            scores = item_factors @ users[n]
            top = np.argpartition(-scores, limit)[:limit]
            found = {h.payload.item_id for h in hits}
            extra = [ids[i] for i in top[np.argsort(-scores[top])] if ids[i] not in found]
            return hits, index.retrieve(extra, with_vectors=True)

        result = {
            "items": items,
            "factors": factors,
            "limit_per_space": limit,
            "install_s": round(install_s, 2),
            "content_only_us": round(_per_query_us(content_only, queries)),
            "fused_us": round(_per_query_us(fused, queries)),
            "content_plus_numpy_us": round(_per_query_us(numpy_pass, queries)),
        }
        index.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--retrieval-items", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    settings = load_settings()
    folder = movielens_dir(settings.dataset_dir, settings.state_dir / "datasets")
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.node()}",
        "training": bench_training(folder, args.factors),
        "fold_in": bench_fold_in(args.events, args.users, args.items, args.factors, args.batch),
        "retrieval": [bench_retrieval(n, args.factors, 80) for n in args.retrieval_items],
    }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
