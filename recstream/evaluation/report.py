"""The evaluation's outputs: results.json (every number), report.md (tables) and PNG plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

BASELINES = ("popular", "item-kNN", "ALS", "EASE", "RP3beta", "GRU4Rec")
TABLE_METHODS = (
    *BASELINES,
    "shipped",
    "shipped - collab",
    "content",
    "hybrid",
    "hybrid - covis",
    "hybrid - popularity",
    "hybrid - MMR",
    "collab (fold-in)",
    "blended",
)


def write_report(results: list[dict[str, Any]], out: Path, command: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    lines = [f"# recstream evaluation\n\nReproduce: `{command}`\n"]
    for run in results:
        lines += _run_section(run)
        _plots(run, out)
        _write_profile(run, out)
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report


def profile_name(run: dict[str, Any]) -> str:
    return f"profile-{run['dataset']}-{run['split']}.env"


def _write_profile(run: dict[str, Any], out: Path) -> None:
    """The blend tuned on this run's validation split, as a file RECSTREAM_PROFILE loads."""
    lines = [
        f"# recstream eval: the configuration tuned on the validation split of {run['dataset']}"
        f", {run['split']}",
        *(f"{key}={value}" for key, value in run["profile"].items()),
    ]
    (out / profile_name(run)).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def _run_section(run: dict[str, Any]) -> list[str]:
    methods = run["methods"]
    tuned = run["tuned"]
    best_baseline = max(BASELINES, key=lambda m: methods[m]["@10"]["ndcg"])
    best = max(methods[best_baseline]["@10"]["ndcg"], 1e-12)
    ship = methods["shipped"]["@10"]["ndcg"] / best
    ratio = methods["hybrid"]["@10"]["ndcg"] / best
    blended = methods["blended"]["@10"]["ndcg"] / best
    lines = [
        f"## {run['dataset']}, split {run['split']}",
        "",
        f"{run['train_events']} training events, {run['test_users']} test users, "
        f"{run['catalog']} items; {run['seconds']} s.",
        f"Tuned on validation: half-life {tuned['half_life_h']:g} h, co-visitation window "
        f"{tuned['covis_window']}, weights (sim, covis, pop) = {tuple(tuned['weights'])}, "
        f"{tuned['covis_per_seed']} neighbours per seed, lambda {tuned['lambda']}, blend "
        f"{tuned['blend']}, "
        f"ALS {tuned['als']}.",
        f"NDCG@10 / best baseline ({best_baseline}): **shipped {ship:.3f}**; tuned on this "
        f"run's validation: hybrid {ratio:.3f}, blended {blended:.3f} (profile: "
        f"`{profile_name(run)}`)",
        "",
        "| method | P@10 | R@10 | NDCG@10 | MAP@10 | HR@10 | NDCG@20 | R@20 | coverage | "
        "diversity | novelty | cold | warm | heavy |",
        "|---|" + "---:|" * 13,
    ]
    for name in [*TABLE_METHODS, *sorted(set(methods) - set(TABLE_METHODS))]:
        m = methods[name]
        buckets = [
            _fmt(m["buckets"][b]["ndcg@10"]) if b in m["buckets"] else "-"
            for b in ("cold", "warm", "heavy")
        ]
        lines.append(
            f"| {name} | "
            + " | ".join(
                _fmt(v)
                for v in (
                    m["@10"]["precision"],
                    m["@10"]["recall"],
                    m["@10"]["ndcg"],
                    m["@10"]["map"],
                    m["@10"]["hit_rate"],
                    m["@20"]["ndcg"],
                    m["@20"]["recall"],
                    m["coverage@10"],
                    m["diversity@10"],
                    m["novelty@10"],
                )
            )
            + " | "
            + " | ".join(buckets)
            + " |"
        )
    counts = {b: v["users"] for b, v in methods["popular"]["buckets"].items()}
    lines += [
        "",
        f"Users per bucket (training events: cold < 5, warm 5-49, heavy 50+): {counts}",
        "",
    ]
    return lines


def _plots(run: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    methods = run["methods"]
    tag = f"{run['dataset']}-{run['split']}"
    names = [n for n in TABLE_METHODS if n in methods]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(names, [methods[n]["@10"]["ndcg"] for n in names], color="#4c72b0")
    ax.set_ylabel("NDCG@10")
    ax.set_title(f"NDCG@10 by method ({tag})")
    ax.tick_params(axis="x", rotation=35)
    fig.tight_layout()
    fig.savefig(out / f"{tag}-ndcg-by-method.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 4))
    buckets = [b for b in ("cold", "warm", "heavy") if b in methods["popular"]["buckets"]]
    width = 0.8 / max(1, len(buckets))
    for n, bucket in enumerate(buckets):
        values = [methods[m]["buckets"].get(bucket, {}).get("ndcg@10", 0.0) for m in names]
        ax.bar([i + n * width for i in range(len(names))], values, width, label=bucket)
    ax.set_xticks([i + width * (len(buckets) - 1) / 2 for i in range(len(names))], names)
    ax.tick_params(axis="x", rotation=35)
    ax.set_ylabel("NDCG@10")
    ax.set_title(f"NDCG@10 by user bucket ({tag})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"{tag}-ndcg-by-bucket.png", dpi=110)
    plt.close(fig)

    curve = sorted(
        (float(n.split("=")[1]), m) for n, m in methods.items() if n.startswith("hybrid lambda=")
    )
    curve.append((float(run["tuned"]["lambda"]), methods["hybrid"]))
    if run["tuned"]["lambda"] != 1.0:
        curve.append((1.0, methods["hybrid - MMR"]))
    curve.sort(key=lambda pair: pair[0])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([m["diversity@10"] for _, m in curve], [m["@10"]["ndcg"] for _, m in curve], "o-")
    for lam, m in curve:
        ax.annotate(f"λ={lam:g}", (m["diversity@10"], m["@10"]["ndcg"]))
    ax.set_xlabel("intra-list diversity@10")
    ax.set_ylabel("NDCG@10")
    ax.set_title(f"Diversity vs accuracy, MMR lambda ({tag})")
    fig.tight_layout()
    fig.savefig(out / f"{tag}-diversity-vs-accuracy.png", dpi=110)
    plt.close(fig)
