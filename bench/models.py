"""Training cost of every model the evaluation compares (a benchmark, not a test: it asserts
nothing): wall time and peak memory of fitting popular, item-kNN, ALS (the shipped
RECSTREAM_COLLAB_* parameters, the `recstream train` maths), EASE, RP3beta and GRU4Rec on
MovieLens ml-latest-small and on a synthetic catalog of 100,000 items (Zipf popularity).

Each fit runs in its own process, so its peak RSS is its own: reported as the growth over the
process's RSS with the data loaded. The baseline is ALS in the same run, the model `recstream
train` fits (ratios against it; popular and item-kNN fit nothing ahead of a request but
counts). EASE needs the item x item matrix dense (n_items^2 doubles): it is not run where that
exceeds --max-ease-gib. GRU4Rec is timed over --gru-epochs epochs.

Prints one JSON object; docs/benchmarks.md records the figures with the machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from workload import print_with_machine

from recstream.compose import als_params
from recstream.core.settings import load_settings
from recstream.datasets import movielens_dir
from recstream.evaluation.baselines import (
    Ease,
    ImplicitALS,
    Interactions,
    ItemKNN,
    MostPopular,
    RP3Beta,
)
from recstream.evaluation.sequential import Gru4Rec, GruParams
from recstream.movielens import rating_events
from recstream.schemas.events import InteractionEvent

MODELS = ("popular", "item-kNN", "ALS", "EASE", "RP3beta", "GRU4Rec")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _synthetic(items: int, users: int, per_user: int, seed: int = 7) -> list[InteractionEvent]:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, items + 1) ** 0.9  # Zipf-like popularity
    picked = rng.choice(items, size=users * per_user, p=weights / weights.sum())
    return [
        InteractionEvent(f"e{n}", f"u{n // per_user}", f"i{item}", "click", n)
        for n, item in enumerate(picked.tolist())
    ]


def _fit(name: str, data: Interactions, events: Sequence[InteractionEvent], epochs: int) -> None:
    fits: dict[str, Callable[[], Any]] = {
        "popular": lambda: MostPopular(data),
        "item-kNN": lambda: ItemKNN(data),
        "ALS": lambda: ImplicitALS(data, als_params(load_settings({}))),
        "EASE": lambda: Ease(data),
        "RP3beta": lambda: RP3Beta(data),
        "GRU4Rec": lambda: list(Gru4Rec(data, events, GruParams()).train([epochs])),
    }
    fits[name]()


def _child(name: str, source: str, args: argparse.Namespace, out: Any) -> None:
    events, catalog = _events(source, args)
    data = Interactions.build(events, catalog, load_settings({}).event_weights)
    loaded = _rss_mib()
    started = time.perf_counter()
    _fit(name, data, events, args.gru_epochs)
    seconds = round(time.perf_counter() - started, 2)
    out.put({"seconds": seconds, "peak_mib": round(_rss_mib() - loaded)})


def _events(source: str, args: argparse.Namespace) -> tuple[list[InteractionEvent], list[str]]:
    if source == "movielens":
        settings = load_settings({})
        events = rating_events(movielens_dir(settings.dataset_dir, settings.state_dir / "datasets"))
        return events, sorted({e.item_id for e in events})
    events = _synthetic(args.items, args.users, args.per_user)
    return events, [f"i{n}" for n in range(args.items)]


def _measure(name: str, source: str, args: argparse.Namespace, catalog: int) -> dict[str, Any]:
    if name == "EASE" and catalog**2 * 8 / 2**30 > args.max_ease_gib:
        return {"skipped": f"needs {catalog**2 * 8 / 2**30:.0f} GiB for the item x item matrix"}
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(name, source, args, queue))
    process.start()
    process.join()
    if process.exitcode != 0:
        return {"failed": f"exit code {process.exitcode}"}
    result: dict[str, Any] = queue.get()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000, help="synthetic catalog size")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--per-user", type=int, default=25, help="synthetic events per user")
    parser.add_argument("--gru-epochs", type=int, default=1)
    parser.add_argument("--max-ease-gib", type=float, default=8.0)
    args = parser.parse_args()
    catalogs = {"movielens": len(_events("movielens", args)[1]), "synthetic": args.items}
    results: dict[str, Any] = {}
    for source, catalog in catalogs.items():
        results[source] = {"items": catalog}
        for name in MODELS:
            results[source][name] = _measure(name, source, args, catalog)
            print(source, name, results[source][name], flush=True)
        base = max(results[source]["ALS"].get("seconds", 0.0), 0.01)
        for name in MODELS:
            if "seconds" in results[source][name]:
                results[source][name]["x_als"] = round(results[source][name]["seconds"] / base, 2)
    print_with_machine(results)


if __name__ == "__main__":
    main()
