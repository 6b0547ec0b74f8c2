"""One evaluation: a dataset, a split, every method, every metric. Hyper-parameters are tuned on a
validation split cut from the training events in the same way, never on the test split."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from recstream.compose import als_params, ranking_weights, session_config
from recstream.consumers.ranking import RankingWeights
from recstream.core.collab import CollabModel
from recstream.core.ports import Embedder
from recstream.core.settings import ENV_PREFIX, Settings
from recstream.evaluation import metrics
from recstream.evaluation.baselines import (
    Ease,
    ImplicitALS,
    Interactions,
    ItemKNN,
    MostPopular,
    RP3Beta,
    training_counts,
)
from recstream.evaluation.data import EvalDataset
from recstream.evaluation.sequential import Gru4Rec, GruParams
from recstream.evaluation.split import Split
from recstream.evaluation.system import Variant, embed_catalog, recommend_all, replay
from recstream.infra.stores.memory_index import InMemoryVectorIndex
from recstream.infra.stores.memory_store import InMemorySessionStore
from recstream.streams.collab import AlsParams, fit_als, user_histories
from recstream.streams.session import SessionConfig

Lists = dict[str, list[str]]
HOUR_MS = 3600 * 1000
BUCKETS = (("cold", 0, 5), ("warm", 5, 50), ("heavy", 50, None))  # training events per user
HALF_LIVES_MS = (HOUR_MS, 24 * HOUR_MS, 30 * 24 * HOUR_MS)
COVIS_WINDOWS = (5, 20)  # recent items each new one is counted as co-visited with
COVIS_PER_SEED = (30, 60, 120)  # co-visited neighbours read per recent item
# The next signal as an operator opts in (RECSTREAM_NEXT_WINDOW, RECSTREAM_RANK_WEIGHT_NEXT):
# its best window and weight on the validation splits; scored beside `shipped` on every run.
NEXT_OPT_IN = (10, 2.0)
# Share of the score given to the collaborative space (0: its items join the candidates only).
COLLAB_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
COLLAB_MIN_HISTORY = (0, 5, 20)  # items a user needs before the collaborative space is used
WEIGHT_STEPS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
LAMBDAS = (0.3, 0.5, 0.7, 0.85, 1.0)
# ALS's own grid: factors, regularisation, alpha (confidence 1 + alpha * weight).
ALS_GRID = ((32, 64, 128, 256), (0.01, 0.1, 1.0), (1.0, 10.0, 40.0))
EASE_LAMBDAS = (100.0, 500.0, 2000.0)  # EASE's L2 regularisation (Steck's MovieLens range)
# RP3beta's walk sharpening and popularity demotion (Dacrema et al.'s range), 100 neighbours.
RP3_GRID = {"alpha": (0.5, 1.0), "beta": (0.0, 0.3, 0.6)}
# GRU4Rec's size and epochs (each size trained once, scored after each number of epochs).
GRU_SIZES = (64,)
GRU_EPOCHS = (5, 10, 20)
SplitFunction = Callable[[Sequence[Any]], Split]


@dataclass(frozen=True)
class Tuned:
    session: SessionConfig  # half-life and co-visitation window
    hybrid: Variant  # weights, MMR lambda, neighbours per seed
    blended: Variant  # the hybrid plus the collaborative space
    als: AlsParams
    validation_ndcg10: dict[str, float]
    ease: float = 500.0  # EASE's lambda
    rp3beta: tuple[float, float] = (1.0, 0.3)  # RP3beta's alpha, beta
    gru: tuple[int, int] = (64, 10)  # GRU4Rec's size, epochs


@dataclass
class Context:
    """What every method of one split shares."""

    split: Split
    index: InMemoryVectorIndex
    session: SessionConfig
    k: int
    users: list[str]  # test users (with relevant items), sorted
    collab: CollabModel | None  # set once ALS parameters are known
    history_cap: int  # seen items kept per user (the store's cap, as served)
    covis_max_neighbours: int
    trending_min_recent: float


def _score(lists: Lists, relevant: Mapping[str, set[str]], k: int) -> float:
    values = [metrics.ndcg_at(lists[u], relevant[u], k) for u in relevant]
    return float(np.mean(values)) if values else 0.0


def system_lists(
    ctx: Context, session: SessionConfig, variants: Sequence[Variant]
) -> dict[str, Lists]:
    """Replay the training events with these session settings, then every variant's lists."""
    store = InMemorySessionStore(
        ctx.history_cap,
        ctx.covis_max_neighbours,
        session.popularity_half_life_ms,
        (session.trending_half_life_ms, ctx.trending_min_recent),
    )
    replay(ctx.split.train, ctx.index, store, session, collab=ctx.collab)
    return {
        v.name: recommend_all(ctx.index, store, ctx.users, ctx.k, v, ctx.collab) for v in variants
    }


def _best(
    ctx: Context, session: SessionConfig, variants: Sequence[Variant]
) -> tuple[Variant, float]:
    lists = system_lists(ctx, session, variants)
    scores = {v.name: _score(lists[v.name], ctx.split.relevant, 10) for v in variants}
    best = max(variants, key=lambda v: scores[v.name])  # the first of equals: grids go simple first
    return best, scores[best.name]


def _weight_grid() -> list[RankingWeights]:
    grid = itertools.product(WEIGHT_STEPS, repeat=3)
    return [RankingWeights(*w) for w in grid if abs(sum(w) - 1.0) < 1e-9]


def shipped(settings: Settings) -> Tuned:
    """The configuration that ships: every value read from the settings (the one source of each
    default), evaluated by name on every run. `shipped - collab` is it without the
    collaborative space."""
    weights = ranking_weights(settings)
    hybrid = Variant(
        "shipped - collab",
        replace(weights, collab=0.0),
        settings.diversity,
        covis_per_seed=settings.covis_per_seed,
    )
    blended = replace(
        hybrid, name="shipped", weights=weights, collab_min_history=settings.collab_min_history
    )
    return Tuned(session_config(settings), hybrid, blended, als_params(settings), {})


def untuned(ship: Tuned) -> Tuned:
    """Without tuning, the tuned rows are the shipped configuration's."""
    return replace(
        ship,
        hybrid=replace(ship.hybrid, name="hybrid"),
        blended=replace(ship.blended, name="blended"),
    )


def tune(ctx: Context, data: Interactions, ship: Tuned) -> Tuned:
    """Grid search on the validation context, one stage at a time: the session settings
    (half-life, co-visitation window), the score weights (plain score order), the co-visited
    neighbours read per seed, the MMR lambda; then ALS's own grid."""
    default = ship.hybrid
    sessions = [
        replace(ctx.session, half_life_ms=h, covis_window=w)
        for h in HALF_LIVES_MS
        for w in COVIS_WINDOWS
    ]
    by_session = {n: _best(ctx, s, [default])[1] for n, s in enumerate(sessions)}
    session = sessions[max(by_session, key=lambda n: by_session[n])]
    grid = [Variant(f"w{n}", w, 1.0) for n, w in enumerate(_weight_grid())]
    best, _ = _best(ctx, session, grid)
    reads = [replace(best, name=f"r{n}", covis_per_seed=n) for n in COVIS_PER_SEED]
    best, _ = _best(ctx, session, reads)
    lambdas = [replace(best, name=f"l{x}", diversity=x) for x in LAMBDAS]
    hybrid, score = _best(ctx, session, lambdas)
    als, als_score = _tune_als(ctx, data, ship.als)
    ease, ease_score = _tune_ease(ctx, data)
    rp3beta, rp3beta_score = _tune_rp3beta(ctx, data)
    gru, gru_score = _tune_gru(ctx, data)
    ctx.collab = train_collab(ctx.split, ctx.session, als)
    blends = [
        _blend(hybrid, weight, least, f"b{weight}-{least}")
        for weight in COLLAB_WEIGHTS
        for least in COLLAB_MIN_HISTORY
    ]
    blended, blended_score = _best(ctx, session, blends)
    ctx.collab = train_collab(ctx.split, ship.session, ship.als)  # the shipped one, to compare
    _, shipped_score = _best(ctx, ship.session, [ship.blended])
    return Tuned(
        session,
        replace(hybrid, name="hybrid"),
        replace(blended, name="blended"),
        als,
        {
            "hybrid": score,
            "blended": blended_score,
            "als": als_score,
            "ease": ease_score,
            "rp3beta": rp3beta_score,
            "GRU4Rec": gru_score,
            "shipped": shipped_score,
        },
        ease,
        rp3beta,
        gru,
    )


def _blend(hybrid: Variant, collab_weight: float, min_history: int, name: str) -> Variant:
    """The hybrid's weights scaled to leave `collab_weight` to the collaborative space."""
    w = hybrid.weights
    rest = 1.0 - collab_weight
    weights = RankingWeights(
        w.similarity * rest,
        w.covisitation * rest,
        w.popularity * rest,
        collab_weight,
        w.next * rest,
    )
    return replace(hybrid, name=name, weights=weights, collab_min_history=min_history)


def train_collab(split: Split, session: SessionConfig, als: AlsParams) -> CollabModel:
    """ALS item factors on the split's training histories (the `recstream train` job's maths);
    the replay then folds users in against them as the interaction processor does."""
    histories = user_histories(split.train, session.weights)
    items = sorted({i for h in histories.values() for i in h})
    return fit_als(histories, items, als, version=1)


def _tune_als(ctx: Context, data: Interactions, ship: AlsParams) -> tuple[AlsParams, float]:
    """ALS's grid around the shipped iterations and seed."""
    scored = []
    for factors, regularization, alpha in itertools.product(*ALS_GRID):
        params = replace(ship, factors=factors, regularization=regularization, alpha=alpha)
        model = ImplicitALS(data, params)
        lists = {u: model.recommend(u, ctx.k) for u in ctx.users}
        scored.append((_score(lists, ctx.split.relevant, 10), params))
    best = max(scored, key=lambda pair: pair[0])  # the first of equals: the grid's order
    return best[1], best[0]


def _tune_ease(ctx: Context, data: Interactions) -> tuple[float, float]:
    scored = []
    for regularization in EASE_LAMBDAS:
        model = Ease(data, regularization)
        lists = {u: model.recommend(u, ctx.k) for u in ctx.users}
        scored.append((_score(lists, ctx.split.relevant, 10), regularization))
    best = max(scored, key=lambda pair: pair[0])  # the first of equals: the grid's order
    return best[1], best[0]


def _tune_rp3beta(ctx: Context, data: Interactions) -> tuple[tuple[float, float], float]:
    scored = []
    for alpha, beta in itertools.product(*RP3_GRID.values()):
        model = RP3Beta(data, alpha, beta)
        lists = {u: model.recommend(u, ctx.k) for u in ctx.users}
        scored.append((_score(lists, ctx.split.relevant, 10), (alpha, beta)))
    best = max(scored, key=lambda pair: pair[0])  # the first of equals: the grid's order
    return best[1], best[0]


def _tune_gru(ctx: Context, data: Interactions) -> tuple[tuple[int, int], float]:
    scored = []
    for size in GRU_SIZES:
        model = Gru4Rec(data, ctx.split.train, GruParams(size=size))
        for epochs in model.train(GRU_EPOCHS):
            lists = {u: model.recommend(u, ctx.k) for u in ctx.users}
            scored.append((_score(lists, ctx.split.relevant, 10), (size, epochs)))
    best = max(scored, key=lambda pair: pair[0])  # the first of equals: the grid's order
    return best[1], best[0]


def _variants(tuned: Tuned) -> list[Variant]:
    """The tuned hybrid, its ablations and its MMR curve (all on the tuned session settings)."""
    hybrid = tuned.hybrid
    w = hybrid.weights
    no_covis = RankingWeights(w.similarity, 0.0, w.popularity)
    return [
        hybrid,
        replace(hybrid, name="hybrid - covis", weights=no_covis, covis_candidates=False),
        replace(hybrid, name="hybrid - popularity", weights=replace(w, popularity=0.0)),
        replace(hybrid, name="hybrid - MMR", diversity=1.0),
        tuned.blended,
        Variant(
            "collab (fold-in)",
            RankingWeights(0.0, 0.0, 0.0, 1.0),
            1.0,
            covis_candidates=False,
            collab_min_history=0,
        ),
        *(
            replace(hybrid, name=f"hybrid lambda={x}", diversity=x)
            for x in LAMBDAS
            if x not in (hybrid.diversity, 1.0)  # those two are "hybrid" and "hybrid - MMR"
        ),
    ]


def all_lists(ctx: Context, data: Interactions, tuned: Tuned, ship: Tuned) -> dict[str, Lists]:
    popular, knn = MostPopular(data), ItemKNN(data)
    als = ImplicitALS(data, tuned.als)
    lists: dict[str, Lists] = {
        "popular": {u: popular.recommend(u, ctx.k) for u in ctx.users},
        "item-kNN": {u: knn.recommend(u, ctx.k) for u in ctx.users},
        "ALS": {u: als.recommend(u, ctx.k) for u in ctx.users},
    }
    ease = Ease(data, tuned.ease)
    lists["EASE"] = {u: ease.recommend(u, ctx.k) for u in ctx.users}
    rp3beta = RP3Beta(data, *tuned.rp3beta)
    lists["RP3beta"] = {u: rp3beta.recommend(u, ctx.k) for u in ctx.users}
    size, epochs = tuned.gru
    gru = Gru4Rec(data, ctx.split.train, GruParams(size=size))
    list(gru.train([epochs]))
    lists["GRU4Rec"] = {u: gru.recommend(u, ctx.k) for u in ctx.users}
    # Content-only and the shipped configuration run on the shipped session settings.
    content = Variant("content", RankingWeights(1.0, 0.0, 0.0), 1.0, covis_candidates=False)
    ctx.collab = train_collab(ctx.split, ship.session, ship.als)
    lists |= system_lists(ctx, ship.session, [content, ship.blended, ship.hybrid])
    lists |= system_lists(ctx, *_with_next(ship))
    ctx.collab = train_collab(ctx.split, ctx.session, tuned.als)
    lists |= system_lists(ctx, tuned.session, _variants(tuned))
    return lists


def _with_next(ship: Tuned) -> tuple[SessionConfig, list[Variant]]:
    """The shipped configuration with the next signal as an operator turns it on (or, should it
    ship on, without it): its session settings and its variant."""
    window, weight = NEXT_OPT_IN
    if ship.blended.weights.next > 0:
        off = replace(ship.blended.weights, next=0.0)
        return ship.session, [replace(ship.blended, name="shipped - next", weights=off)]
    session = replace(ship.session, next_window=window)
    on = replace(ship.blended.weights, next=weight)
    return session, [replace(ship.blended, name="shipped + next", weights=on)]


def _bucket(history: int) -> str:
    for name, low, high in BUCKETS:
        if history >= low and (high is None or history < high):
            return name
    raise AssertionError(history)


def measure(ctx: Context, lists: Lists, vectors: Mapping[str, Any]) -> dict[str, Any]:
    """Accuracy at 10 and 20 (prefixes of one list of 20), beyond-accuracy at 10, per bucket."""
    relevant = ctx.split.relevant
    result: dict[str, Any] = {}
    for k in (10, 20):
        per_user = [metrics.user_accuracy(lists[u], relevant[u], k) for u in ctx.users]
        result[f"@{k}"] = {
            name: float(np.mean([m[name] for m in per_user if m is not None]))
            for name in metrics.ACCURACY
        }
    top10 = [lists[u][:10] for u in ctx.users]
    counts = training_counts(ctx.split.train)
    result["coverage@10"] = metrics.catalog_coverage(top10, ctx.index.count())
    result["diversity@10"] = metrics.intra_list_diversity(top10, vectors)
    result["novelty@10"] = metrics.novelty(top10, counts, len(ctx.split.history))
    result["buckets"] = {}
    for name, _, _ in BUCKETS:
        users = [u for u in ctx.users if _bucket(ctx.split.history[u]) == name]
        if users:
            ndcg = [metrics.ndcg_at(lists[u], relevant[u], 10) for u in users]
            result["buckets"][name] = {"users": len(users), "ndcg@10": float(np.mean(ndcg))}
    return result


def evaluate(
    dataset: EvalDataset,
    split_function: SplitFunction,
    ship: Tuned,
    embedder: Embedder,
    cache_dir: Path,
    caps: tuple[int, int, float],  # the store's history and co-visit caps, trending floor
    tune_on_validation: bool = True,
) -> dict[str, Any]:
    """Every method on one split; `ship` is the shipped configuration (`shipped`)."""
    started = time.monotonic()
    split = split_function(dataset.events)
    index = embed_catalog(dataset.catalog(split.visible), embedder, cache_dir)
    catalog = index.item_ids()
    session = ship.session
    test = Context(split, index, session, 20, sorted(split.relevant), None, *caps)
    tuned = untuned(ship)
    if tune_on_validation:
        validation = split_function(split.train)
        val_ctx = Context(validation, index, session, 20, sorted(validation.relevant), None, *caps)
        tuned = tune(val_ctx, Interactions.build(validation.train, catalog, session.weights), ship)
    data = Interactions.build(split.train, catalog, session.weights)
    lists = all_lists(test, data, tuned, ship)
    vectors = {i: r.vector for i, r in index.retrieve(catalog).items()}
    return {
        "dataset": dataset.name,
        "split": split.name,
        "train_events": len(split.train),
        "test_users": len(test.users),
        "catalog": index.count(),
        "tuned": {
            "half_life_h": tuned.session.half_life_ms / HOUR_MS,
            "covis_window": tuned.session.covis_window,
            "weights": [
                tuned.hybrid.weights.similarity,
                tuned.hybrid.weights.covisitation,
                tuned.hybrid.weights.popularity,
            ],
            "covis_per_seed": tuned.hybrid.covis_per_seed,
            "lambda": tuned.hybrid.diversity,
            "blend": {
                "collab_weight": tuned.blended.weights.collab,
                "min_history": tuned.blended.collab_min_history,
            },
            "als": asdict(tuned.als),
            "ease_lambda": tuned.ease,
            "rp3beta_alpha_beta": list(tuned.rp3beta),
            "gru4rec_size_epochs": list(tuned.gru),
            "validation_ndcg@10": tuned.validation_ndcg10,
        },
        "profile": profile(tuned),
        "methods": {name: measure(test, found, vectors) for name, found in lists.items()},
        "seconds": round(time.monotonic() - started, 1),
    }


def profile(tuned: Tuned) -> dict[str, str]:
    """The tuned configuration as the RECSTREAM_* settings that serve it (a profile file the
    worker loads through RECSTREAM_PROFILE). The blend's weights are the served weights."""
    weights = tuned.blended.weights
    values: dict[str, Any] = {
        "session_half_life_ms": tuned.session.half_life_ms,
        "covis_window": tuned.session.covis_window,
        "rank_weight_similarity": weights.similarity,
        "rank_weight_covisitation": weights.covisitation,
        "rank_weight_popularity": weights.popularity,
        "rank_weight_collab": weights.collab,
        "rank_weight_next": weights.next,
        "collab_min_history": tuned.blended.collab_min_history or 0,
        "covis_per_seed": tuned.blended.covis_per_seed,
        "diversity": tuned.blended.diversity,
        "collab_factors": tuned.als.factors,
        "collab_regularization": tuned.als.regularization,
        "collab_alpha": tuned.als.alpha,
    }
    return {ENV_PREFIX + name.upper(): str(value) for name, value in values.items()}
