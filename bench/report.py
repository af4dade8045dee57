"""The report: the markdown tables, the targets (PASS/FAIL) and the notes."""

from __future__ import annotations

import statistics
from typing import Any

from bench.capacity import redis_markdown
from bench.config import BENCH
from bench.drops import drops_markdown
from bench.fanout_report import fanout_markdown
from bench.measure import QUIET
from bench.specs import REFERENCE, SCENARIO_BY_KEY, SERVERS

CLIENT_BOUND = 0.9  # the load generator's share of its core from which a figure is marked


# -- tables ---------------------------------------------------------------------------------


def fmt(value: float, unit: str) -> str:
    if unit == "KB/conn":
        return f"{value:.1f}"
    if unit == "MB/s":
        return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
    return f"{value:,.0f}"


TAKEOVER_MODES = ("takeover", "takeover-inapp")
TARGET_COLUMNS = (*TAKEOVER_MODES, "takeover-legacy")
TARGETS = [
    # (scenario, peer, minimum ratio takeover/peer, label, the takeover rows it applies to)
    ("small", "websockets", 1.3, "32 B echo: takeover >= 1.3x websockets", TAKEOVER_MODES),
    ("small", "gevent-websocket", 1.8, "32 B echo: takeover >= 1.8x gevent-websocket", TAKEOVER_MODES),
    ("small", "gevent-tcp", 0.75, "32 B echo: takeover >= 0.75x raw gevent TCP", TAKEOVER_MODES),
    ("large", "websockets", 1.0, "1 MiB echo: takeover >= 1.0x websockets", TAKEOVER_MODES),
    ("handshake", "gevent-websocket", 1.0, "handshakes/s: takeover >= 1.0x gevent-websocket", TAKEOVER_MODES),
    (
        "handshake",
        "gevent-websocket",
        1.2,
        "handshakes/s: takeover (socket mode) >= 1.2x gevent-websocket",
        ("takeover",),
    ),
    (
        "large",
        "gevent-websocket",
        20.0,
        "1 MiB echo: the gevent-websocket app on takeover.legacy >= 20x on gevent-websocket",
        ("takeover-legacy",),
    ),
]


def evaluate_targets(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for scenario, peer, minimum, label, modes in TARGETS:
        row: dict[str, Any] = {"target": label}
        for mode in TARGET_COLUMNS:
            if mode not in modes:
                row[mode] = {"ratio": None, "pass": None, "applies": False}
                continue
            mine = summary.get(mode, {}).get(scenario, {}).get("median")
            theirs = summary.get(peer, {}).get(scenario, {}).get("median")
            if mine is None or theirs is None or theirs == 0:
                row[mode] = {"ratio": None, "pass": None}
            else:
                ratio = mine / theirs
                row[mode] = {"ratio": ratio, "pass": ratio >= minimum}
        rows.append(row)
    idle = {}
    for mode in ("takeover", "takeover-inapp"):
        value = summary.get(mode, {}).get("idle", {}).get("median")
        idle[mode] = {"value": value, "pass": None if value is None else value <= 10.0}
    rows.append(dict({"target": "idle RSS: takeover <= 10 KB per connection"}, **idle))
    framed = {}
    for mode, source in (
        ("takeover", "takeover_socket_broadcast.py"),
        ("takeover-inapp", "takeover_inapp_broadcast.py"),
    ):
        text = (BENCH / "servers" / source).read_text()
        uses = "from takeover import broadcast" in text or "import broadcast," in text
        ran = summary.get(mode, {}).get("broadcast", {}).get("median") is not None
        framed[mode] = {
            "value": f"takeover.broadcast in bench/servers/{source}",
            "pass": uses and ran if ran else None,
        }
    rows.append(
        dict({"target": "broadcast: takeover frames the message once (takeover.broadcast)"}, **framed)
    )
    return rows


#: Issue 19's ratios on threaded servers, each of two medians of the same run:
#: (scenario, numerator row, denominator row, minimum ratio or None (shown only), label).
THREADED = [
    (
        "small",
        "gunicorn-gthread",
        "flask-sock-gthread",
        2.0,
        "32 B echo: takeover handed over (gthread) / Flask-Sock (gthread)",
    ),
    (
        "small",
        "gunicorn-gthread",
        "gunicorn-takeover",
        0.6,
        "32 B echo: takeover handed over (gthread) / takeover's gevent worker",
    ),
    (
        "small",
        "takeover-flask-sock-gthread",
        "flask-sock-gthread",
        2.0,
        "32 B echo: takeover.flask_sock (gthread) / Flask-Sock (gthread)",
    ),
    (
        "small",
        "thread-floor",
        "flask-sock-gthread",
        None,
        "32 B echo: a thread per connection at its floor (no server, no queue) / Flask-Sock (gthread)",
    ),
    (
        "small",
        "takeover-flask-sock-gthread",
        "thread-floor",
        None,
        "32 B echo: takeover.flask_sock (gthread) / a thread per connection at its floor",
    ),
    (
        "handshake",
        "gunicorn-gthread",
        "flask-sock-gthread",
        1.5,
        "handshakes: takeover handed over (gthread) / Flask-Sock (gthread)",
    ),
    (
        "large",
        "gunicorn-gthread",
        "flask-sock-gthread",
        None,
        "1 MiB echo: takeover handed over (gthread) / Flask-Sock (gthread)",
    ),
    (
        "large",
        "gunicorn-gthread",
        "gunicorn-takeover",
        None,
        "1 MiB echo: takeover handed over (gthread) / takeover's gevent worker",
    ),
    (
        "large",
        "takeover-flask-sock-gthread",
        "flask-sock-gthread",
        None,
        "1 MiB echo: takeover.flask_sock (gthread) / Flask-Sock (gthread)",
    ),
]
#: Issue 22: the 32 B echo with takeover.metrics on (mounted, multiprocess mode, scraped every
#: second) against the same app without it, within 2%.
THREADED.append(
    (
        "small",
        "gunicorn-gthread-metrics",
        "gunicorn-gthread",
        0.98,
        "32 B echo: metrics on / off (handed over, gthread; issue 22)",
    )
)
THREADED_ROWS = {key for _, mine, theirs, _, _ in THREADED for key in (mine, theirs)}


def evaluate_threaded(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 19's ratios for the threaded-server rows, from this run's medians: for each,
    both medians, their ratio, the target and whether it is met (None: no target, or a
    median missing). Empty when the run had none of those rows."""
    if not THREADED_ROWS & set(summary):
        return []
    rows = []
    for scenario, mine, theirs, minimum, label in THREADED:
        a = summary.get(mine, {}).get(scenario, {}).get("median")
        b = summary.get(theirs, {}).get(scenario, {}).get("median")
        ratio = a / b if a is not None and b else None
        rows.append(
            {
                "target": label,
                "scenario": scenario,
                "server": mine,
                "peer": theirs,
                "server_median": a,
                "peer_median": b,
                "ratio": ratio,
                "minimum": minimum,
                "met": None if ratio is None or minimum is None else ratio >= minimum,
            }
        )
    return rows


def threaded_markdown(report: dict[str, Any]) -> str:
    """The threaded-servers table: issue 19's ratios, "met" or "missed" per line."""
    rows = report.get("threaded") or []
    if not rows:
        return ""
    out = [
        "Threaded servers (issue 19) and metrics (issue 22), each ratio of two medians of this run:",
        "",
        "| ratio | medians | ratio (this run) | target | |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        unit = SCENARIO_BY_KEY[row["scenario"]].unit
        values = (row["server_median"], row["peer_median"])
        medians = " / ".join("-" if value is None else fmt(value, unit) for value in values) + f" {unit}"
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        target = "(shown)" if row["minimum"] is None else f">= {row['minimum']:g}x"
        if row["minimum"] is None:
            status = "-"
        else:
            status = {None: "not measured", True: "met", False: "missed"}[row["met"]]
        out.append(f"| {row['target']} | {medians} | {ratio} | {target} | {status} |")
    return "\n".join(out) + "\n"


def verdict(cell: dict[str, Any] | None, scenario_unit: str = "") -> str:
    if cell is None or cell.get("applies") is False:
        return "n/a"
    if cell.get("pass") is None:
        return "not measured"
    mark = "PASS" if cell["pass"] else "FAIL"
    if cell.get("ratio") is not None:
        return f"{mark} ({cell['ratio']:.2f}x)"
    if isinstance(cell.get("value"), float):
        return f"{mark} ({cell['value']:.1f} KB)"
    return mark


#: Before/after: "within 3% or better" (the refactor's acceptance).
TOLERANCE = 0.03


def before_after(report: dict[str, Any]) -> list[dict[str, Any]]:
    """For each baseline row and scenario: the medians before (REV) and after (current code),
    their ratio after/before, the same ratio round by round, and whether it is within
    ``TOLERANCE`` or better (higher for rates, lower for idle RSS)."""
    summary = report["summary"]
    details = report.get("details", {})
    rows = []
    for twin, current in report["config"].get("baseline_of", {}).items():
        for key in report["config"]["scenarios"]:
            scenario = SCENARIO_BY_KEY[key]
            before = summary.get(twin, {}).get(key, {}).get("median")
            after = summary.get(current, {}).get(key, {}).get("median")
            row: dict[str, Any] = {
                "server": current,
                "baseline": twin,
                "scenario": key,
                "before": before,
                "after": after,
                "ratio": None,
                "within": None,
                "round_ratios": [],
                "per_cpu_ratio": None,
            }
            if before and after is not None:
                ratio = after / before
                row["ratio"] = ratio
                row["within"] = (
                    ratio >= 1 - TOLERANCE if scenario.higher_is_better else ratio <= 1 + TOLERANCE
                )
            # The same figure per second of the server's own CPU time: a server that got
            # less of its core (other load, waiting on the client) is not counted slower.
            efficiency = {
                side: [
                    d["value"] / d["server_cpu"]
                    for d in details.get(k, {}).get(key, [])
                    if d.get("server_cpu")
                ]
                for side, k in (("before", twin), ("after", current))
            }
            if scenario.key != "idle" and efficiency["before"] and efficiency["after"]:
                row["per_cpu_ratio"] = statistics.median(efficiency["after"]) / statistics.median(
                    efficiency["before"]
                )
            # The two rows measured in the same round, a few seconds apart.
            by_round = {d.get("round"): d["value"] for d in details.get(twin, {}).get(key, [])}
            row["round_ratios"] = [
                d["value"] / by_round[d.get("round")]
                for d in details.get(current, {}).get(key, [])
                if by_round.get(d.get("round"))
            ]
            rows.append(row)
    return rows


def before_after_markdown(report: dict[str, Any]) -> str:
    rows = report.get("before_after") or []
    if not rows:
        return ""
    info = report["machine"]
    base = report["baseline"]
    after = f"the current checkout ({info['takeover_commit']}" + (
        ", with uncommitted changes in takeover/)" if info["takeover_uncommitted_changes"] else ")"
    )
    labels = report["config"].get("server_labels", {})
    out = [
        f"Before/after, in this run: before = takeover@{base['short']} (a git worktree of "
        f"{base['commit'][:12]}, {base['rev']!r}), after = {after}. after/before is the ratio of "
        f"the medians (then the same ratio round by round); \"within\" is {TOLERANCE:.0%} or better "
        "(for idle RSS, lower is better); the last column compares the figures per second of the "
        "server's own CPU time (medians), which a server kept off its core by other load does not lower.",
        "",
        f"| row | scenario | before (takeover@{base['short']}) | after | after/before | by round "
        f"| within {TOLERANCE:.0%} | per server CPU-second |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        scenario = SCENARIO_BY_KEY[row["scenario"]]
        name = labels.get(row["server"], row["server"])
        before = "-" if row["before"] is None else fmt(row["before"], scenario.unit)
        after_text = "-" if row["after"] is None else fmt(row["after"], scenario.unit)
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3f}x"
        rounds = ", ".join(f"{r:.2f}" for r in row["round_ratios"]) or "-"
        within = {None: "-", True: "yes", False: "NO"}[row["within"]]
        per_cpu = "-" if row.get("per_cpu_ratio") is None else f"{row['per_cpu_ratio']:.3f}x"
        out.append(
            f"| {name} | {scenario.title} ({scenario.unit}) | {before} | {after_text} | {ratio} | "
            f"{rounds} | {within} | {per_cpu} |"
        )
    if base.get("same_code"):
        out += [
            "",
            f"takeover/ and examples/ are the same at {base['short']} as in this checkout: the "
            "differences are this machine's noise.",
        ]
    return "\n".join(out) + "\n"


def _servers(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, label) of the rows of this run, in its order."""
    labels = report["config"].get("server_labels")
    if labels is None:  # a report from before the labels were recorded
        labels = {server.key: server.label for server in SERVERS}
    return [(key, labels.get(key, key)) for key in report["config"]["servers"]]


def markdown(report: dict[str, Any]) -> str:
    """The tables of a run: the servers' (if it ran any of their scenarios), then fan-out's."""
    parts = [servers_markdown(report)] if report["config"]["scenarios"] else []
    if report.get("fanout"):
        parts.append(fanout_markdown(report["fanout"]))
    if report.get("fanout_saturated"):
        parts.append(fanout_markdown(report["fanout_saturated"]))
    if report.get("drops"):
        parts.append(drops_markdown(report["drops"]))
    if report.get("redis"):
        parts.append(redis_markdown(report["redis"]))
    return "\n".join(parts)


def servers_markdown(report: dict[str, Any]) -> str:
    summary = report["summary"]
    scenarios = [SCENARIO_BY_KEY[key] for key in report["config"]["scenarios"]]
    servers = _servers(report)
    header = ["server"] + [f"{scenario.title} ({scenario.unit})" for scenario in scenarios]
    rows = []
    for key, label in servers:
        row = [label]
        for scenario in scenarios:
            cell = summary.get(key, {}).get(scenario.key, {})
            if cell.get("status") == "ok":
                reference = summary.get(REFERENCE, {}).get(scenario.key, {}).get("median")
                text = fmt(cell["median"], scenario.unit)
                if reference:
                    text += f" ({cell['median'] / reference:.2f}x)"
                if cell.get("client_cpu", 0) >= CLIENT_BOUND:
                    text += " †"
                if cell.get("problems"):
                    text += " !"
                row.append(text)
            else:
                row.append(cell.get("status", "-"))
        rows.append(row)
    widths = [max(len(str(line[i])) for line in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True))
            + " |"
        )

    out = [line(header), "|" + "|".join("-" * (width + 2) for width in widths) + "|"]
    out += [line(row) for row in rows]
    out.append("")
    out.append(
        f"Medians of {report['config']['rounds']} round(s) of {report['config']['duration']:g} s; "
        "(N.NNx) is the ratio to takeover (socket mode) in the same run "
        '(for idle RSS, lower is better). "†": the load generator used '
        f"{CLIENT_BOUND:.0%} or more of its CPU, so it, not the server, may have set the figure. "
        '"!": a figure with problems (listed below).'
    )
    threaded = threaded_markdown(report)
    if threaded:
        out += ["", threaded.rstrip("\n")]
    comparison = before_after_markdown(report)
    if comparison:
        out += ["", comparison.rstrip("\n")]
    busy = [
        (label, scenario.title, cell["foreign_cpu_max"])
        for key, label in servers
        for scenario in scenarios
        for cell in [summary.get(key, {}).get(scenario.key, {})]
        if cell.get("foreign_cpu_max", 0) > QUIET
    ]
    if busy:
        out.append("")
        out.append(
            "Other processes used the CPUs during: "
            + "; ".join(f"{label}, {title} (up to {share:.0%} of a core)" for label, title, share in busy)
            + "."
        )
    out.append("")
    out.append("CPU use during the measured window (median; share of one core), server / load generator:")
    out.append("")
    cpu_header = ["server"] + [scenario.title for scenario in scenarios if scenario.key != "idle"]
    out.append("| " + " | ".join(cpu_header) + " |")
    out.append("|" + "|".join("---" for _ in cpu_header) + "|")
    for key, label in servers:
        row = [label]
        for scenario in scenarios:
            if scenario.key == "idle":
                continue
            cell = summary.get(key, {}).get(scenario.key, {})
            row.append(
                f"{cell['server_cpu']:.0%} / {cell['client_cpu']:.0%}" if "client_cpu" in cell else "-"
            )
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    target_rows = report["targets"]
    out.append("| target (issue) | takeover (socket mode) | takeover (in-app) | takeover.legacy |")
    out.append("|---|---|---|---|")
    for row in target_rows:
        cells = " | ".join(verdict(row.get(mode)) for mode in TARGET_COLUMNS)
        out.append(f"| {row['target']} | {cells} |")
    notes = []
    for key, label in servers:
        for scenario in scenarios:
            cell = summary.get(key, {}).get(scenario.key, {})
            for problem in cell.get("problems", []):
                notes.append(f"- {label}, {scenario.title}: {problem}")
            for error in cell.get("errors", []):
                notes.append(f"- {label}, {scenario.title}: {error}")
            if cell.get("reason"):
                notes.append(f"- {label}, {scenario.title}: {cell['status']}: {cell['reason']}")
    if notes:
        out += ["", "Problems, errors and gaps:", "", *notes]
    return "\n".join(out) + "\n"


def machine_markdown(report: dict[str, Any]) -> str:
    info = report["machine"]
    config = report["config"]
    lines = [
        f"- date: {info['date']}",
        f"- CPU: {info['cpu']}, {info['cores']} cores, {info['memory']} RAM, Linux {info['kernel']}",
        f"- pinning: {config['pinning']}",
        f"- Python {info['python']}, gevent {info['gevent']}, greenlet {info['greenlet']}",
        f"- takeover {info['takeover']} at {info['takeover_commit']}"
        + (" (with uncommitted changes in takeover/)" if info["takeover_uncommitted_changes"] else "")
        + (
            f" (CHANGED DURING THE RUN: it started at {report['takeover_at_start']['commit']})"
            if report["takeover_sources_changed_during_run"]
            else ""
        )
        + f", C speedups: {info['takeover_speedups']}",
        f"- websockets {info['websockets']} (C speedups: {info['websockets_speedups']}), "
        f"gevent-websocket {info['gevent-websocket']}, Flask {info['flask']}, "
        f"Flask-Sock {info['flask-sock']} (simple-websocket {info['simple-websocket']}), "
        f"picows {info['picows']}, uvloop {info['uvloop']}",
        *(
            [
                f"- baseline: takeover@{report['baseline']['short']} = {report['baseline']['commit']} "
                f"({report['baseline']['rev']!r}), in a temporary git worktree (removed after the run); "
                f"C speedups {report['baseline']['speedups']}"
            ]
            if report.get("baseline")
            else []
        ),
        f"- Node {info['node']}, ws {info['ws']}, bufferutil {info['bufferutil']} "
        f"(load generator: {config['client']} client; Node server)",
        *(
            [
                f"- fan-out: redis-server {info['redis-server']}, redis-py {info['redis']} (hiredis "
                f"{info['hiredis']}), gunicorn {info['gunicorn']}, Flask-SocketIO {info['flask-socketio']}, "
                f"python-socketio {info['python-socketio']}, python-engineio {info['python-engineio']}, "
                f"socket.io-client {info['socket.io-client']}"
            ]
            if report.get("fanout") or report.get("fanout_saturated") or report.get("drops")
            else []
        ),
        f"- command: `{config['command']}`; {config['rounds']} round(s), {config['duration']:g} s per "
        f"measurement after {config['warmup']:g} s of warm-up; total {report['runtime_seconds']:.0f} s",
    ]
    lines.append("- scenarios:")
    for key in config["scenarios"]:
        lines.append(f"  - {SCENARIO_BY_KEY[key].title}: {config['scenario_descriptions'][key]}")
    if report.get("fanout"):
        lines.append(f"  - fan-out: {report['fanout']['description']}")
    if report.get("fanout_saturated"):
        lines.append(f"  - fan-out at saturation: {report['fanout_saturated']['description']}")
    if report.get("drops"):
        lines.append(f"  - drops: {report['drops']['description']}")
    return "\n".join(lines) + "\n"
