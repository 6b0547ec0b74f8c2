"""Filtered search benchmark (a benchmark, not a test: it asserts nothing).

For each catalog size: items with random 384-d unit vectors, a release year (uniform 1950-2020),
a price band (one of three) and one tag of 50, in two embedded Qdrant shards with their HNSW
built: one with payload indexes on the filterable attributes (RECSTREAM_FILTER_ATTRIBUTES), one
without. For each filter, the same random query vectors (k = 40) are searched in both; reported:
median and p99 time per search, its ratio to the unfiltered search of the same shard, and
recall@40 against an exact (numpy) filtered top-40 over the same vectors. Baseline in the same
run: the unfiltered search.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from recstream.core.attributes import AttributeCondition, AttributeType
from recstream.core.index import ItemPayload, SearchFilter, collection_name
from recstream.infra.stores.qdrant_edge_index import QdrantEdgeIndex

DIM = 384
TAGS = 50
PRICES = ("low", "medium", "high")
DECLARED: dict[str, AttributeType] = {"year": "number", "price": "keyword"}
FILTERS: dict[str, SearchFilter] = {
    "none": SearchFilter(),
    "year >= 1990 (43%)": SearchFilter(attributes=(AttributeCondition("year", gte=1990),)),
    "year 2015-2016 (2.8%)": SearchFilter(
        attributes=(AttributeCondition("year", gte=2015, lte=2016),)
    ),
    "price = low (33%)": SearchFilter(attributes=(AttributeCondition("price", any=("low",)),)),
    "tag t7 (2%)": SearchFilter(tags_any=("t7",)),
    "year 2015-2016 and price = low (0.9%)": SearchFilter(
        attributes=(
            AttributeCondition("year", gte=2015, lte=2016),
            AttributeCondition("price", any=("low",)),
        )
    ),
}

Catalog = tuple[npt.NDArray[np.float32], list[ItemPayload]]


def catalog(items: int) -> Catalog:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(items, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    years = rng.integers(1950, 2021, size=items)
    payloads = [
        ItemPayload(
            f"i{n}",
            f"Item {n}",
            f"c{n % 20}",
            (f"t{n % TAGS}",),
            True,
            "h",
            1,
            {"year": int(years[n]), "price": PRICES[int(rng.integers(3))]},
        )
        for n in range(items)
    ]
    return vectors, payloads


def build_shard(path: Path, data: Catalog, declared: dict[str, AttributeType]) -> QdrantEdgeIndex:
    vectors, payloads = data
    name = collection_name("bench-filters", DIM)
    index = QdrantEdgeIndex.open(path / name, name, DIM, filter_attributes=declared)
    for start in range(0, len(payloads), 2000):
        chunk = payloads[start : start + 2000]
        index.upsert(list(zip(chunk, vectors[start : start + len(chunk)], strict=True)))
    index.optimize()
    return index


def exact_top(data: Catalog, query: npt.NDArray[np.float32], flt: SearchFilter) -> set[str]:
    vectors, payloads = data
    allowed = np.array([flt.admits(p) for p in payloads])
    scores = np.where(allowed, vectors @ query, -np.inf)
    top = np.argsort(-scores)[: min(40, int(allowed.sum()))]
    return {payloads[int(n)].item_id for n in top}


def measure(
    search: Callable[[npt.NDArray[np.float32], SearchFilter], set[str]],
    data: Catalog,
    flt: SearchFilter,
    queries: npt.NDArray[np.float32],
) -> dict[str, float]:
    timings, recalls = [], []
    for query in queries:
        started = time.perf_counter()
        found = search(query, flt)
        timings.append((time.perf_counter() - started) * 1e6)
        expected = exact_top(data, query, flt)
        recalls.append(len(found & expected) / max(1, len(expected)))
    return {
        "p50_us": float(np.percentile(timings, 50)),
        "p99_us": float(np.percentile(timings, 99)),
        "recall": float(np.mean(recalls)),
    }


def bench_catalog(items: int, queries: int, folder: Path) -> list[dict[str, Any]]:
    data = catalog(items)
    rng = np.random.default_rng(5)
    asked = rng.normal(size=(queries, DIM)).astype(np.float32)
    asked /= np.linalg.norm(asked, axis=1, keepdims=True)
    rows: list[dict[str, Any]] = []
    for label, declared in (("indexed", DECLARED), ("not indexed", {})):
        started = time.perf_counter()
        index = build_shard(folder / f"{items}-{label.replace(' ', '-')}", data, declared)
        built_s = time.perf_counter() - started

        def search(query: npt.NDArray[np.float32], flt: SearchFilter) -> set[str]:
            return {h.payload.item_id for h in index.search(query, 40, flt)}  # noqa: B023

        baseline = measure(search, data, FILTERS["none"], asked)
        for name, flt in FILTERS.items():
            result = baseline if name == "none" else measure(search, data, flt, asked)
            rows.append(
                {"items": items, "payload indexes": label, "filter": name, "built_s": built_s}
                | result
                | {"ratio": result["p50_us"] / baseline["p50_us"]}
            )
        index.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print("| items | payload indexes | filter | p50 µs | p99 µs | x unfiltered | recall@40 |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for items in args.items:
            for row in bench_catalog(items, args.queries, Path(folder)):
                print(
                    f"| {row['items']:,} | {row['payload indexes']} | {row['filter']} | "
                    f"{row['p50_us']:,.0f} | {row['p99_us']:,.0f} | {row['ratio']:.2f} | "
                    f"{row['recall']:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
