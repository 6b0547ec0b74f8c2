"""Would a model beside the shipped ranking help? A probe for the signals #20 proposes serving
live (an item-item model trained by the trainer, a sequential model at query time), before
building one: each candidate's list is fused with the shipped configuration's list by weighted
reciprocal rank, score(i) = (1 - w) / (c + rank_shipped(i)) + w / (c + rank_model(i)), and
(w, c) is picked on the validation split only; the test split then says what it would add.
Last, a learned combination of all of them (each list's weight fitted on validation by
coordinate ascent), for #20's "blending by a learned combination rather than fixed weights".

Late fusion of two top-50 lists is a cheap stand-in for a served signal (which would score
every candidate, not only the two lists' items): a model that does not help here is unlikely to
help as a signal, and one that helps says how much serving it could add.

Same data, split, shipped configuration and baselines as `recstream eval`, at fixed values
(EASE lambda 500, RP3beta alpha 1 / beta 0.3, GRU4Rec size 64 / 20 epochs), the tuned ones or
close (MovieLens's tuned RP3beta has alpha 0.5: 0.1026 alone on test against 0.1001 here).
Prints one JSON object; docs/evaluation.md records the figures.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Mapping
from functools import partial
from typing import Any, Protocol

import numpy as np
from workload import print_with_machine

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
JOINT_STEPS = (0.0, 0.1, 0.2, 0.35, 0.5, 0.8, 1.2)  # each model's weight beside shipped's 1
JOINT_OFFSET = 20
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


def fuse(lists: Mapping[str, Lists], weights: Mapping[str, float], offset: int) -> Lists:
    """Weighted reciprocal-rank fusion per user: score(i) = sum of w_m / (offset + rank_m(i))
    over the lists m; the top 10, ties in the order items were first met."""
    fused = {}
    for user in next(iter(lists.values())):
        score: dict[str, float] = {}
        for name, weight in weights.items():
            for rank, item in enumerate(lists[name][user]):
                score[item] = score.get(item, 0.0) + weight / (offset + rank)
        fused[user] = sorted(score, key=lambda item: -score[item])[:10]
    return fused


def learn_blend(
    lists: Mapping[str, Lists], relevant: Mapping[str, set[str]], offset: int, rounds: int = 3
) -> dict[str, float]:
    """A learned combination of every list: coordinate ascent on NDCG@10 from shipped alone,
    each model's weight in turn over JOINT_STEPS, `rounds` times (the first of equals kept)."""
    weights = {name: 1.0 if name == "shipped" else 0.0 for name in lists}
    for _ in range(rounds):
        for name in lists:
            if name == "shipped":
                continue
            tried = {}
            for step in JOINT_STEPS:
                tried[step] = _ndcg(fuse(lists, weights | {name: step}, offset), relevant)
            weights[name] = max(tried, key=lambda step: tried[step])
    return weights


def _ndcg(lists: Lists, relevant: Mapping[str, set[str]]) -> float:
    return float(np.mean([metrics.ndcg_at(lists[u], relevant[u], 10) for u in relevant]))


def ratio_interval(
    fused: Lists, shipped_lists: Lists, relevant: Mapping[str, set[str]], resamples: int = 2000
) -> list[float]:
    """A 95% interval of NDCG@10(fused) / NDCG@10(shipped) over the test users, by a paired
    bootstrap (users drawn with replacement, both lists scored on the same draw)."""
    users = sorted(relevant)
    pairs = np.array(
        [
            (
                metrics.ndcg_at(fused[u], relevant[u], 10),
                metrics.ndcg_at(shipped_lists[u], relevant[u], 10),
            )
            for u in users
        ]
    )
    draws = np.random.default_rng(0).integers(0, len(users), size=(resamples, len(users)))
    sums = pairs[draws].sum(axis=1)
    ratios = sums[:, 0] / np.maximum(sums[:, 1], 1e-12)
    return [round(float(x), 3) for x in np.percentile(ratios, [2.5, 97.5])]


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
                    fuse(found[part], {"shipped": 1 - weight, name: weight}, offset),
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
            "test_x_shipped_95": ratio_interval(
                fuse(found["test"], {"shipped": 1 - best[0], name: best[0]}, best[1]),
                found["test"]["shipped"],
                relevant["test"],
            ),
            "best_test_of_grid": round(max(g["test"] for g in grid.values()), 4),
        }
    learned = learn_blend(found["validation"], relevant["validation"], JOINT_OFFSET)
    joint = {
        part: _ndcg(fuse(found[part], learned, JOINT_OFFSET), relevant[part]) for part in found
    }
    return {
        "dataset": dataset_name,
        "alone": alone,
        "shipped_fused_with": fused,
        "learned_blend_of_all": {
            "weights_learned_on_validation": learned,
            "validation": round(joint["validation"], 4),
            "test": round(joint["test"], 4),
            "test_x_shipped": round(joint["test"] / alone["test"]["shipped"], 3),
            "test_x_shipped_95": ratio_interval(
                fuse(found["test"], learned, JOINT_OFFSET),
                found["test"]["shipped"],
                relevant["test"],
            ),
        },
        "seconds": round(time.monotonic() - started),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", action="append", choices=("movielens", "restaurant"))
    args = parser.parse_args()
    results: dict[str, Any] = {
        name: probe(name) for name in args.dataset or ["movielens", "restaurant"]
    }
    print_with_machine(results)


if __name__ == "__main__":
    main()
