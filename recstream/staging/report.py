"""The staging report: per phase figures from the real Prometheus (the queries are stored beside
them, so an operator can run them against their own) and from the client's own records, the
faults and their recovery, which alerts were pending or firing when, the verdicts against the
goals; Markdown, JSON and a PNG."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from recstream.infra.prometheus_server import PrometheusServer

log = logging.getLogger(__name__)


def _quantile(q: float, histogram: str, scale: str = "") -> str:
    return f"{scale}histogram_quantile({q}, sum by (le) (increase({histogram}_bucket[{{d}}s])))"


_E2E, _AGE = "recstream_query_end_to_end_seconds", "recstream_query_state_age_seconds"
_APPLIED = 'recstream_interactions_events_total{{outcome="applied"}}'
_SHED = 'recstream_query_requests_total{{status=~"overloaded|expired"}}'
_RSS = "process_resident_memory_bytes"
_QUERY_RSS = _RSS + '{{process=~"query.*|all.*"}}'  # the one process also answers queries
# {d}: the phase's length in whole seconds; each is evaluated at the phase's end.
PHASE_QUERIES = {
    "query_p50_ms": _quantile(0.5, _E2E, "1000 * "),
    "query_p99_ms": _quantile(0.99, _E2E, "1000 * "),
    "freshness_p50_s": _quantile(0.5, _AGE),
    "freshness_p99_s": _quantile(0.99, _AGE),
    "ingest_per_s": f"sum(increase({_APPLIED}[{{d}}s])) / {{d}}",
    "lag_max": "max_over_time(sum(recstream_consumer_lag_records)[{d}s:2s])",
    "dead_letters": "sum(increase(recstream_dead_letters_total[{d}s]))",
    "shed_answers": f"sum(increase({_SHED}[{{d}}s]))",
    "query_rss_max_mib": f"max(max_over_time({_QUERY_RSS}[{{d}}s])) / 2^20",
    "rss_max_mib": f"max(max_over_time({_RSS}[{{d}}s])) / 2^20",
}
SERIES_QUERIES = {
    "consumer_lag": "sum(recstream_consumer_lag_records)",
    "applied_per_s": 'sum(rate(recstream_interactions_events_total{outcome="applied"}[10s]))',
    "query_rss_mib": 'max(process_resident_memory_bytes{process=~"query.*|all.*"}) / 2^20',
}
ALERTS_QUERY = "ALERTS"
# A role exiting this soon after a broker or Redis fault is put down to it: e.g. a consumer
# fenced by its own static instance id when its coordinator moved (docs/reliability.md).
SERVICE_FAULT_WINDOW_S = 120.0


def write_report(prometheus: PrometheusServer, data: dict[str, Any], out: Path) -> None:
    phases = data["timeline"]["phases"]
    data["phase_figures"] = [_phase_figures(prometheus, phase, data) for phase in phases]
    start, end = phases[0]["start"], phases[-1]["end"]
    data["alerts"] = _alert_intervals(prometheus, start, end)
    data["series"] = {
        name: _series(prometheus, query, start, end) for name, query in SERIES_QUERIES.items()
    }
    data["goals"] = goals(data)
    data["queries"] = {"per_phase": PHASE_QUERIES, "series": SERIES_QUERIES, "alerts": ALERTS_QUERY}
    (out / "staging.json").write_text(json.dumps(data, indent=1, default=str))
    (out / "report.md").write_text(markdown(data))
    try:
        plot(data, out / "staging.png")
    except ImportError:  # a server-only install: the figures are in report.md all the same
        log.warning("no plot: matplotlib is missing (pip install 'recstream[eval]')")


def _phase_figures(
    prometheus: PrometheusServer, phase: dict[str, Any], data: dict[str, Any]
) -> dict[str, Any]:
    length = max(2, int(phase["end"] - phase["start"]))
    figures: dict[str, Any] = {"phase": phase["name"], "seconds": length}
    for name, template in PHASE_QUERIES.items():
        result = prometheus.query(template.format(d=length), phase["end"])
        value = float(result[0]["value"][1]) if result else float("nan")
        figures[name] = None if np.isnan(value) else round(value, 3)
    figures |= _client_figures(data["client"]["requests"], phase["start"], phase["end"])
    return figures


def _client_figures(requests: list[list[Any]], start: float, end: float) -> dict[str, Any]:
    """What the client saw of the requests it sent during the phase."""
    inside = [r for r in requests if start <= r[0] < end]
    ok = [r for r in inside if r[2] == "ok"]
    latency = [1000 * (r[1] - r[0]) for r in ok]
    ages = [r[3] / 1000 for r in ok if r[3] is not None]
    statuses: dict[str, int] = {}
    for r in inside:
        statuses[r[2] or "never came back"] = statuses.get(r[2] or "never came back", 0) + 1
    return {
        "client_requests": len(inside),
        "client_statuses": statuses,
        "client_p50_ms": _percentile(latency, 50),
        "client_p99_ms": _percentile(latency, 99),
        "client_freshness_p50_s": _percentile(ages, 50),
        "client_freshness_p99_s": _percentile(ages, 99),
    }


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def _alert_intervals(
    prometheus: PrometheusServer, start: float, end: float
) -> list[dict[str, Any]]:
    """Each alert's pending and firing stretches (from the ALERTS series, 2 s steps)."""
    found = []
    for series in prometheus.query_range(ALERTS_QUERY, start, end, 2):
        labels = series["metric"]
        times = [float(t) for t, _ in series["values"]]
        for first, last in _runs(times, 2.0):
            found.append(
                {
                    "alert": labels.get("alertname"),
                    "state": labels.get("alertstate"),
                    "labels": {
                        k: v
                        for k, v in labels.items()
                        if k not in ("alertname", "alertstate", "__name__")
                    },
                    "from": first,
                    "to": last,
                }
            )
    return found


def _runs(times: list[float], step: float) -> list[tuple[float, float]]:
    runs: list[tuple[float, float]] = []
    for t in times:
        if runs and t - runs[-1][1] <= step * 1.5:
            runs[-1] = (runs[-1][0], t)
        else:
            runs.append((t, t))
    return runs


def _series(
    prometheus: PrometheusServer, query: str, start: float, end: float
) -> list[list[float]]:
    result = prometheus.query_range(query, start, end, 2)
    return [[float(t), float(v)] for t, v in result[0]["values"]] if result else []


def _phase(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next((p for p in data["phase_figures"] if p["phase"] == name), {})


def goals(data: dict[str, Any]) -> list[dict[str, Any]]:
    """R1-R5 and the query tail, each with what was measured and whether it was met."""
    return [check(data) for check in (_r1, _r2, _r3, _r4, _r5, _tail)]


def _faults(data: dict[str, Any], *words: str) -> list[dict[str, Any]]:
    return [f for f in data["timeline"]["faults"] if any(w in f["name"] for w in words)]


def _r1(data: dict[str, Any]) -> dict[str, Any]:
    kills = [f for f in _faults(data, "kill ") if "." in f["name"]]
    replay = data["replay"]
    return _goal(
        "R1",
        f"{len(kills)} SIGKILLs of role processes -> state equal to a clean replay",
        replay["passed"],
        f"{replay['users']} users compared; {len(replay['differences'])} differences",
    )


def _r2(data: dict[str, Any]) -> dict[str, Any]:
    gaps = [
        f["detail"].get("longest_ack_gap_s", 0.0) for f in _faults(data, "broker", "controller")
    ]
    log = data["log"]
    return _goal(
        "R2",
        "brokers killed (the controller leader among them) -> 0 acknowledged events lost, "
        "resume <= 10 s",
        log["passed"] and bool(gaps) and all(g <= 10 for g in gaps),
        f"{log['acknowledged']} acknowledged ({log.get('not_acknowledged', 0)} refused to the "
        f"producer), {log['missing']} missing, {log['duplicated']} duplicated; longest pause in "
        "acknowledgements " + ", ".join(f"{g:.1f} s" for g in gaps),
    )


def _r3(data: dict[str, Any]) -> dict[str, Any]:
    unexplained, after_service_faults = exits_not_killed(data)
    malformed = sum(v["sent"] for v in data["dead_letters"])
    dead_lettered = sum(v["dead_lettered"] for v in data["dead_letters"])
    return _goal(
        "R3",
        "malformed records -> 0 crashes, 100 % dead-lettered with a reason",
        not unexplained and dead_lettered == malformed,
        f"{malformed} malformed (near-limit ones included), {dead_lettered} dead-lettered; "
        f"process exits not caused by a SIGKILL: {len(unexplained)}, besides "
        f"{len(after_service_faults)} within {SERVICE_FAULT_WINDOW_S:.0f} s of a broker or "
        "Redis fault",
    )


def exits_not_killed(data: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Role processes that exited by themselves (not SIGKILLed): those with no broker or Redis
    fault in the SERVICE_FAULT_WINDOW_S before, and those with one."""
    service_faults = [f["at"] for f in _faults(data, "broker", "controller", "redis")]
    unexplained: list[str] = []
    explained: list[str] = []
    for name, process in data["processes"].items():
        for when, code in process["exits"]:
            if code == -9:  # our SIGKILL
                continue
            near = any(0 <= when - at <= SERVICE_FAULT_WINDOW_S for at in service_faults)
            (explained if near else unexplained).append(f"{name} exit {code}")
    return unexplained, explained


def _r4(data: dict[str, Any]) -> dict[str, Any]:
    bursts = _faults(data, "burst")
    recovered = bursts[0]["recovered_s"] if bursts else None
    burst, steady = _phase(data, "burst"), _phase(data, "steady")
    burst_rss, steady_rss = burst.get("query_rss_max_mib"), steady.get("query_rss_max_mib")
    bounded = (burst_rss or 0) <= 1.5 * (steady_rss or 0) + 64
    return _goal(
        "R4",
        "5x request capacity -> bounded memory, overloaded answers, recovery <= 5 s",
        recovered is not None and recovered <= 5 and bounded,
        f"recovered after {recovered} s; query RSS at most {burst_rss} MiB in the burst vs "
        f"{steady_rss} MiB steady; {burst.get('shed_answers')} answers shed in the burst",
    )


def _r5(data: dict[str, Any]) -> dict[str, Any]:
    restarts = _faults(data, "redis")
    ready_after = restarts[0]["recovered_s"] if restarts else None
    return _goal(
        "R5",
        "Redis killed and restarted -> state intact",
        data["replay"]["passed"] and ready_after is not None,
        f"every role ready {ready_after} s after the restart; the state is compared in R1",
    )


def _tail(data: dict[str, Any]) -> dict[str, Any]:
    steady, idle = _phase(data, "steady"), _phase(data, "idle")
    never = data["requests"].get("never came back", 0)
    return _goal(
        "p99",
        "query p99 during steady ingest <= 2x idle",
        _within(steady.get("client_p99_ms"), idle.get("client_p99_ms")),
        f"steady {steady.get('client_p99_ms')} ms vs idle {idle.get('client_p99_ms')} ms "
        f"(client); {never} requests never came back",
    )


def _within(steady: float | None, idle: float | None) -> bool:
    return steady is not None and idle is not None and steady <= 2 * idle


def _goal(name: str, goal: str, met: bool, measured: str) -> dict[str, Any]:
    return {"goal": name, "what": goal, "met": bool(met), "measured": measured}


def markdown(data: dict[str, Any]) -> str:
    lines = ["# Staging run", ""]
    for title, table in (
        ("Goals", _goals_table(data)),
        ("Phases", [_phase_table(data["phase_figures"])]),
        ("Faults", _faults_table(data)),
        ("Alerts (pending or firing)", [*_alerts_summary(data), "", *_alerts_table(data)]),
        ("Dead letters", _dead_letters_table(data)),
    ):
        lines += [f"## {title}", "", *table, ""]
    replay = data["replay"]
    state = "identical" if replay["passed"] else "; ".join(replay["differences"])
    lines += [f"Requests by answer: {_detail(data['requests'])}", ""]
    lines += [f"State against the clean replay: {state}", "", "![staging](staging.png)", ""]
    lines += ["Prometheus queries (per phase; `{d}`: the phase's seconds; at its end):", ""]
    lines += [f"- `{name}`: `{query}`" for name, query in PHASE_QUERIES.items()]
    return "\n".join(lines) + "\n"


def _goals_table(data: dict[str, Any]) -> list[str]:
    rows = ["| goal | what | met | measured |", "|---|---|---|---|"]
    return rows + [
        f"| {g['goal']} | {g['what']} | {'yes' if g['met'] else 'NO'} | {g['measured']} |"
        for g in data["goals"]
    ]


def _faults_table(data: dict[str, Any]) -> list[str]:
    start = data["timeline"]["phases"][0]["start"]
    rows = ["| at (s) | fault | recovered after (s) | detail |", "|---|---|---|---|"]
    return rows + [
        f"| {f['at'] - start:.0f} | {f['name']} | {_round(f['recovered_s'])} | "
        f"{_detail(f['detail'])} |"
        for f in data["timeline"]["faults"]
    ]


def _alerts_table(data: dict[str, Any]) -> list[str]:
    start = data["timeline"]["phases"][0]["start"]
    rows = ["| alert | on | state | from (s) | to (s) | after |", "|---|---|---|---|---|---|"]
    found = [
        f"| {a['alert']} | {_subject(a['labels'])} | {a['state']} | {a['from'] - start:.0f} | "
        f"{a['to'] - start:.0f} | {_during(a, data)} |"
        for a in sorted(data["alerts"], key=lambda a: (a["from"], a["alert"]))
    ]
    return rows + (found or ["| none | | | | | |"])


def _subject(labels: dict[str, str]) -> str:
    """What the alert is about: its process, topic or role."""
    return ", ".join(labels[k] for k in ("process", "topic", "reason", "role") if k in labels)


def _dead_letters_table(data: dict[str, Any]) -> list[str]:
    rows = ["| topic | malformed sent | dead-lettered | reasons |", "|---|---|---|---|"]
    return rows + [
        f"| {v['topic']} | {v['sent']} | {v['dead_lettered']} | {_detail(v['reasons'])} |"
        for v in data["dead_letters"]
    ]


def _phase_table(figures: list[dict[str, Any]]) -> str:
    columns = [
        ("phase", "phase"),
        ("s", "seconds"),
        ("query p50/p99 ms (client)", None),
        ("query p99 ms (prom)", "query_p99_ms"),
        ("freshness p50/p99 s", None),
        ("ingest /s", "ingest_per_s"),
        ("max lag", "lag_max"),
        ("DLQ", "dead_letters"),
        ("shed", "shed_answers"),
        ("query RSS MiB", "query_rss_max_mib"),
    ]
    header = "| " + " | ".join(c for c, _ in columns) + " |"
    rows = [header, "|" + "---|" * len(columns)]
    for f in figures:
        cells = []
        for title, key in columns:
            if key is not None:
                cells.append(str(_round(f.get(key))))
            elif title.startswith("query"):
                cells.append(f"{_round(f['client_p50_ms'])} / {_round(f['client_p99_ms'])}")
            else:
                cells.append(f"{_round(f['freshness_p50_s'])} / {_round(f['freshness_p99_s'])}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _during(alert: dict[str, Any], data: dict[str, Any]) -> str:
    """The fault this alert stretch followed: the last one to start before it began (of its
    own process, when the alert names one)."""
    before = [f for f in data["timeline"]["faults"] if f["at"] <= alert["from"]]
    process = alert["labels"].get("process")
    own = [f for f in before if process and f["name"].endswith(f" {process}")]
    phase = [p["name"] for p in data["timeline"]["phases"] if p["start"] <= alert["from"]]
    cause = (own or before)[-1]["name"] if before else "no fault yet"
    return f"{cause} (phase {phase[-1] if phase else '-'})"


def _alerts_summary(data: dict[str, Any]) -> list[str]:
    rows = ["| alert | state | stretches | seconds in all |", "|---|---|---|---|"]
    totals: dict[tuple[str, str], list[float]] = {}
    for a in data["alerts"]:
        totals.setdefault((a["alert"], a["state"]), []).append(a["to"] - a["from"] + 2)
    return rows + [
        f"| {alert} | {state} | {len(spans)} | {sum(spans):.0f} |"
        for (alert, state), spans in sorted(totals.items())
    ]


def _round(value: Any) -> Any:
    return round(value, 2) if isinstance(value, float) else value


def _detail(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {_round(v)}" for k, v in values.items())


def plot(data: dict[str, Any], path: Path) -> None:
    """Answers, shed answers, ingest and lag over the run, phases and faults marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = data["timeline"]["phases"][0]["start"]
    figure, axes = plt.subplots(4, 1, figsize=(11, 11), sharex=True)
    _plot_answers(axes[0], axes[1], data["client"]["requests"], start)
    _plot_ingest(axes[2], axes[3], data, start)
    for axis in axes:
        _mark_timeline(axis, data["timeline"], start)
    for phase in data["timeline"]["phases"]:
        top = axes[0].get_ylim()[1]
        axes[0].text(phase["start"] - start, top, phase["name"], fontsize=7, rotation=90, va="top")
    axes[3].set_xlabel("seconds since start")
    figure.suptitle("recstream staging: phases (dotted), faults (red)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_answers(latency: Any, shed: Any, requests: list[list[Any]], start: float) -> None:
    by_second: dict[int, list[float]] = {}
    not_ok: dict[int, int] = {}
    for sent, answered, status, _ in requests:
        second = int(sent - start)
        if status == "ok":
            by_second.setdefault(second, []).append(1000 * (answered - sent))
        else:
            not_ok[second] = not_ok.get(second, 0) + 1
    xs = sorted(by_second)
    for q in (99, 50):
        percentiles = [np.percentile(by_second[x], q) for x in xs]
        latency.plot(xs, percentiles, lw=0.8, label=f"p{q} by second sent")
    latency.set_yscale("log")
    latency.set_ylabel("answer ms (client)")
    latency.legend(fontsize=7)
    shed.bar(list(not_ok), list(not_ok.values()), width=1.0, color="tab:red")
    shed.set_ylabel("answers not ok /s")


def _plot_ingest(rate: Any, lag: Any, data: dict[str, Any], start: float) -> None:
    acks = {int(k) - int(start): v for k, v in data["client"]["acks_per_second"].items()}
    rate.plot(sorted(acks), [acks[k] for k in sorted(acks)], lw=0.8, label="acknowledged /s")
    applied = data["series"]["applied_per_s"]
    xs = [t - start for t, _ in applied]
    rate.plot(xs, [v for _, v in applied], lw=0.8, label="applied /s (Prometheus)")
    rate.set_ylabel("interactions /s")
    rate.legend(fontsize=7)
    behind = data["series"]["consumer_lag"]
    lag.plot([t - start for t, _ in behind], [v for _, v in behind], lw=0.8, color="tab:purple")
    lag.set_ylabel("consumer lag (records)")


def _mark_timeline(axis: Any, timeline: dict[str, Any], start: float) -> None:
    for phase in timeline["phases"]:
        axis.axvline(phase["start"] - start, color="grey", lw=0.5, ls=":")
    for fault in timeline["faults"]:
        axis.axvline(fault["at"] - start, color="tab:red", lw=0.4, alpha=0.5)
