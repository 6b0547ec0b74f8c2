"""`recstream eval`: load the datasets, run every split, write the report."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from recstream.core.errors import RecstreamError
from recstream.core.ports import Embedder
from recstream.core.settings import Settings
from recstream.datasets import movielens_dir, restaurant_dir
from recstream.evaluation import data, split
from recstream.evaluation.harness import SplitFunction, evaluate, shipped
from recstream.evaluation.live import check_live
from recstream.evaluation.report import write_report


@dataclass(frozen=True)
class EvalOptions:
    datasets: tuple[str, ...]  # movielens, restaurant
    splits: tuple[str, ...]  # last-n, global
    out: Path
    data_dir: Path | None = None  # for a single dataset
    holdout: float = 0.2
    cutoff: float = 0.8
    tune: bool = True
    live_users: int = 0  # > 0: also check the offline path against the real one on this many


def _split_functions(options: EvalOptions, has_time: bool) -> list[SplitFunction]:
    functions: list[SplitFunction] = []
    for name in options.splits:
        if name == "last-n":
            functions.append(partial(split.last_fraction, fraction=options.holdout))
        elif name == "global" and has_time:  # without times a global cutoff means nothing
            functions.append(partial(split.global_cutoff, quantile=options.cutoff))
    return functions


def load_dataset(name: str, settings: Settings, explicit: Path | None) -> data.EvalDataset:
    if name == "movielens":
        folder = movielens_dir(explicit or settings.dataset_dir, settings.state_dir / "datasets")
        return data.movielens(folder)
    if name == "restaurant":
        return data.restaurant(restaurant_dir(explicit))
    raise RecstreamError(f"unknown dataset {name!r} (movielens, restaurant)")


def run_eval(settings: Settings, options: EvalOptions, embedder: Embedder) -> tuple[Path, bool]:
    """Evaluate, write the report; the report's path and whether the live check (if asked) held."""
    if options.data_dir is not None and len(options.datasets) != 1:
        raise RecstreamError("--data-dir names the folder of one dataset: pass one --dataset")
    results: list[dict[str, Any]] = []
    live_ok = True
    for name in options.datasets:
        dataset = load_dataset(name, settings, options.data_dir)
        for n, split_function in enumerate(_split_functions(options, dataset.has_time)):
            result = evaluate(
                dataset,
                split_function,
                shipped(settings),
                embedder,
                settings.state_dir / "eval-cache",
                (
                    settings.history_cap,
                    settings.covis_max_neighbours,
                    settings.trending_min_recent,
                ),
                tune_on_validation=options.tune,
            )
            print(_summary(result), flush=True)
            if options.live_users and n == 0:  # once per dataset, on its first split
                check = check_live(
                    settings, dataset, split_function(dataset.events), options.live_users, embedder
                )
                result["live"] = check.summary()
                live_ok = live_ok and not check.mismatched
                print(f"live check: {result['live']}", flush=True)
            results.append(result)
    command = "recstream " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return write_report(results, options.out, command), live_ok


def _summary(result: dict[str, Any]) -> str:
    ndcg = {name: m["@10"]["ndcg"] for name, m in result["methods"].items()}
    best = sorted(ndcg.items(), key=lambda pair: -pair[1])[:5]
    listed = ", ".join(f"{name} {value:.4f}" for name, value in best)
    return f"{result['dataset']} {result['split']}: NDCG@10 {listed} ({result['seconds']} s)"
