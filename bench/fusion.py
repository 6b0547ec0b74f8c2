"""Would a model beside the shipped ranking help? A probe for the signals #20 proposes serving
live (an item-item model trained by the trainer, a sequential model at query time), before
building one: each candidate's list is fused with the shipped configuration's list by weighted
reciprocal rank, score(i) = (1 - w) / (c + rank_shipped(i)) + w / (c + rank_model(i)), and
(w, c) is picked on the validation split only; the test split then says what it would add.

Late fusion of two top-50 lists is a cheap stand-in for a served signal (which would score
every candidate, not only the two lists' items): a model that does not help here is unlikely to
help as a signal, and one that helps says how much serving it could add.

Same data, split, shipped configuration and baselines as `recstream eval` (EASE lambda 500,
RP3beta alpha 1 / beta 0.3, GRU4Rec size 64 / 20 epochs: near the tuned values of the measured
runs). Prints one JSON object; docs/evaluation.md records the figures.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import time
from collections.abc import Mapping
from functools import partial
from typing import Any, Protocol

import numpy as np
import orjson

from recstream.compose import load_embedder
from recstream.core.settings import load_settings
from recstream.evaluation import metrics
from recstream.evaluation.baselines import Ease, Interactions, ItemKNN, RP3Beta
from recstream.evaluation.harness import Context, shipped, system_lists, train_collab
from recstream.evaluation.run import load_dataset
from recstream.evaluation.sequential import Gru4Rec, GruParams
from recstream.evaluation.split import Split, last_fraction
from recstream.evaluation.system import embed_catalog
from recstream.infra.stores.memory_index import InMemoryVectorIndex

DEPTH = 50  # each list's length before fusion
WEIGHTS = (0.1, 0.2, 0.35, 0.5, 0.65, 0.8)  # the model's share w
OFFSETS = (5, 20, 60)  # c: small c trusts the top ranks more
Lists = dict[str, list[str]]


class _Recommends(Protocol):
    def recommend(self, user: str, k: int) -> list[str]: ...


def _models(data: Interactions, split: Split) -> dict[str, _Recommends]:
    gru = Gru4Rec(data, split.train, GruParams(size=64))
    list(gru.train([20]))
    return {
        "RP3beta": RP3Beta(data, 1.0, 0.3),
        "EASE": Ease(data, 500.0),
        "item-kNN": ItemKNN(data),
        "GRU4Rec": gru,
    }


def _lists(
    split: Split, index: InMemoryVectorIndex, caps: tuple[int, int, float]
) -> dict[str, Lists]:
    ship = shipped(load_settings())
    ctx = Context(split, index, ship.session, DEPTH, sorted(split.relevant), None, *caps)
    ctx.collab = train_collab(split, ship.session, ship.als)
    found = {"shipped": system_lists(ctx, ship.session, [ship.blended])["shipped"]}
    data = Interactions.build(split.train, index.item_ids(), ship.session.weights)
    for name, model in _models(data, split).items():
        found[name] = {user: model.recommend(user, DEPTH) for user in ctx.users}
    return found


def fuse(first: Lists, second: Lists, weight: float, offset: int, k: int = 10) -> Lists:
    """Weighted reciprocal-rank fusion of two lists per user; ties keep the first list's order."""
    fused = {}
    for user, ranked in first.items():
        score: dict[str, float] = {}
        for rank, item in enumerate(ranked):
            score[item] = score.get(item, 0.0) + (1 - weight) / (offset + rank)
        for rank, item in enumerate(second[user]):
            score[item] = score.get(item, 0.0) + weight / (offset + rank)
        fused[user] = sorted(score, key=lambda item: -score[item])[:k]
    return fused


def _ndcg(lists: Lists, relevant: Mapping[str, set[str]]) -> float:
    return float(np.mean([metrics.ndcg_at(lists[u], relevant[u], 10) for u in relevant]))


def probe(dataset_name: str) -> dict[str, Any]:
    started = time.monotonic()
    settings = load_settings()
    dataset = load_dataset(dataset_name, settings, None)
    split_function = partial(last_fraction, fraction=0.2)
    test = split_function(dataset.events)
    validation = split_function(test.train)
    index = embed_catalog(
        dataset.catalog(test.visible), load_embedder(settings), settings.state_dir / "eval-cache"
    )
    caps = (settings.history_cap, settings.covis_max_neighbours, settings.trending_min_recent)
    found = {"validation": _lists(validation, index, caps), "test": _lists(test, index, caps)}
    relevant = {"validation": validation.relevant, "test": test.relevant}
    alone = {
        part: {name: round(_ndcg(lists, relevant[part]), 4) for name, lists in found[part].items()}
        for part in found
    }
    fused: dict[str, Any] = {}
    for name in found["test"]:
        if name == "shipped":
            continue
        grid = {}
        for weight, offset in itertools.product(WEIGHTS, OFFSETS):
            grid[(weight, offset)] = {
                part: _ndcg(
                    fuse(found[part]["shipped"], found[part][name], weight, offset),
                    relevant[part],
                )
                for part in found
            }
        best = max(grid, key=lambda key: grid[key]["validation"])  # first of equals
        fused[name] = {
            "w_c_picked_on_validation": list(best),
            "validation": round(grid[best]["validation"], 4),
            "test": round(grid[best]["test"], 4),
            "test_x_shipped": round(grid[best]["test"] / alone["test"]["shipped"], 3),
            "best_test_of_grid": round(max(g["test"] for g in grid.values()), 4),
        }
    return {
        "dataset": dataset_name,
        "alone": alone,
        "shipped_fused_with": fused,
        "seconds": round(time.monotonic() - started),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", action="append", choices=("movielens", "restaurant"))
    args = parser.parse_args()
    results: dict[str, Any] = {
        name: probe(name) for name in args.dataset or ["movielens", "restaurant"]
    }
    results["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
