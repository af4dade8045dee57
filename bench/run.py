"""The ``make bench`` harness: every server under test, one after another, one load generator.

    python -m bench [--quick] [--rounds N] [--duration S] [--servers A,B] [--scenarios X,Y]
                    [--baseline REV]
    python -m bench --scenarios fan-out     (the fan-out scenario alone)
    python -m bench --scenarios drops       (the drops scenario alone)
    python -m bench --scenarios redis       (what one Redis carries for a hub)

Each measurement starts the server as its own process (a fresh one per measurement),
waits for its ready line, runs the Node load generator (bench/node/loadgen.js) for one
scenario against it, and stops it. Rounds are interleaved: round 1 runs scenario 1 on
every server, then scenario 2 on every server, ...; then round 2 does the same, starting
from the next server (the order rotates so no server always runs first). The figure
reported is the median over the rounds. The fan-out scenario has rows of its own
(multi-process servers with Redis, bench/fanout.py); it runs after the others, in as
many rounds, and has its own table. So has the drops scenario (bench/drops.py: a proxy
cutting every connection, clients resuming; counts, not speeds), which runs last.

``BENCH_QUICK=1`` in the environment is ``--quick``: one round of 1 s with fewer
connections, for a fast check. ``--baseline REV`` (or ``BENCH_BASELINE=REV``) adds
``takeover@REV`` rows: the takeover servers run from a temporary git worktree of REV,
interleaved with the current code's in the same rounds, and a before/after table
(bench/baseline.py). Results go to bench/results/latest.json and latest.md
(plus a timestamped copy of each); server output goes to bench/results/logs/.

The parts: bench/specs.py (the scenarios and servers), bench/loadgen.py (server processes
and the load generator), bench/proc.py (CPU time and RSS from /proc), bench/measure.py
(one measurement), bench/machine.py (the machine and versions), bench/report.py (the
tables and targets), bench/config.py (paths and limits), bench/baseline.py (the
baseline's worktree and rows), bench/servers/_launch.py (how a takeover server says
which takeover it imported), bench/fanout.py, bench/fanout_report.py and
bench/redisproc.py (the fan-out scenario, its report, its redis-server).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.baseline import Baseline, interleave
from bench.capacity import REDIS, run_redis
from bench.config import LOGS, RESULTS, ROOT
from bench.drops import DROPS, run_drops
from bench.fanout import FANOUT, FANOUT_SATURATED, run_fanout
from bench.loadgen import raise_nofile
from bench.machine import git_commit, machine, takeover_fingerprint
from bench.measure import QUIET, RETRIES, measure, wait_for_quiet
from bench.report import before_after, evaluate_targets, evaluate_threaded, fmt, machine_markdown, markdown
from bench.specs import (
    DROPS_SERVERS,
    FANOUT_SERVERS,
    REFERENCE,
    SCENARIOS,
    SERVERS,
    FanoutSpec,
    Scenario,
    ServerSpec,
    check_available,
    describe_scenario,
)

# -- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 round of 1 s, fewer connections (also BENCH_QUICK=1)"
    )
    parser.add_argument("--rounds", type=int, help="rounds (default 3, quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per measurement (default 3, quick 1)")
    parser.add_argument(
        "--servers",
        help="comma-separated keys: " + ",".join(s.key for s in SERVERS)
        + "; fan-out rows: " + ",".join(s.key for s in FANOUT_SERVERS)
        + "; drops rows: " + ",".join(s.key for s in DROPS_SERVERS),
    )
    parser.add_argument("--scenarios", help="comma-separated keys: " + ",".join(s.key for s in SCENARIOS))
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="pin each server (and its children, e.g. gunicorn's worker) to the first CPU and the "
        "load generator to the second (default: on when there are two CPUs or more)",
    )
    parser.add_argument(
        "--client",
        choices=["lean", "ws"],
        default="lean",
        help="lean (default): ws opens and closes connections, messages are pre-framed "
        "writes and counted reads; ws: every message through ws's API",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also measure takeover at git revision REV (a temporary worktree), side by side "
        "with the current code (also BENCH_BASELINE=REV)",
    )
    args = parser.parse_args(argv)
    args.argv = argv
    quick = args.quick or os.environ.get("BENCH_QUICK", "") not in ("", "0")
    baseline_rev = args.baseline or os.environ.get("BENCH_BASELINE") or None
    rounds = args.rounds or (1 if quick else 3)
    duration = args.duration or (1.0 if quick else 3.0)
    warmup = 0.25 if quick else 0.5
    settle = 1.0 if quick else 2.0
    servers = [s for s in SERVERS if not args.servers or s.key in args.servers.split(",")]
    scenarios = [s for s in SCENARIOS if not args.scenarios or s.key in args.scenarios.split(",")]
    fanout = [s for s in FANOUT_SERVERS if not args.servers or s.key in args.servers.split(",")]
    drops = [s for s in DROPS_SERVERS if not args.servers or s.key in args.servers.split(",")]
    if any(s.key in (FANOUT, FANOUT_SATURATED) for s in scenarios) and not fanout:
        print("note: no fan-out rows among the servers, so the fan-out scenario has none", file=sys.stderr)
    if any(s.key == DROPS for s in scenarios) and not drops:
        print("note: no drops rows among the servers, so the drops scenario has none", file=sys.stderr)
    if any(s.key not in (FANOUT, FANOUT_SATURATED, DROPS, REDIS) for s in scenarios) and not any(
        s.key == REFERENCE for s in servers
    ):
        print(
            "note: takeover (socket mode) is not among the servers, so there are no ratios", file=sys.stderr
        )

    if shutil.which("node") is None:
        print(
            "make bench: the load generator needs Node.js (node) and bench/node's npm packages",
            file=sys.stderr,
        )
        return 2
    # SIGTERM ends the run like Ctrl-C: the finally blocks stop the server being measured.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    nofile = raise_nofile()
    if nofile < 4 * 3000:
        print(f"warning: only {nofile} open files allowed; the idle scenario may fail", file=sys.stderr)
    pin, pinning = choose_pinning(args.pin, sorted(os.sched_getaffinity(0)))
    if args.pin and pin["server"] is None:
        print(f"warning: --pin needs two CPUs or more; {pinning}", file=sys.stderr)

    baseline = None
    if baseline_rev:
        try:
            baseline = Baseline(baseline_rev)
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            print(f"make bench: no baseline {baseline_rev!r}: {error}", file=sys.stderr)
            return 2
    try:
        if baseline is not None:
            try:
                baseline.create()
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                print(f"make bench: cannot set up the baseline {baseline_rev!r}: {error}", file=sys.stderr)
                return 2
            twins = baseline.servers(servers)
            fanout_twins = baseline.fanout_servers(fanout)
            if not twins and not fanout_twins:
                print("note: no takeover rows among the servers, so the baseline adds none", file=sys.stderr)
            servers = interleave(servers, twins)
            fanout = interleave(fanout, fanout_twins)
            print(
                f"baseline: takeover@{baseline.short} ({baseline.commit}) in a git worktree at "
                f"{baseline.path}; C speedups {baseline.speedups}",
                flush=True,
            )
        return _run(
            args, quick, rounds, duration, warmup, settle, servers, scenarios, fanout, drops, pin, pinning,
            baseline,
        )
    finally:
        if baseline is not None:
            baseline.remove()


def choose_pinning(wanted: bool | None, cpus: list[int]) -> tuple[dict[str, set[int] | None], str]:
    """The CPUs for the server and the load generator, and a line saying so: ``--pin`` (True),
    ``--no-pin`` (False) or neither (None: pin when this process may use two CPUs or more)."""
    if wanted is not False and len(cpus) >= 2:
        pinning = f"server on CPU {cpus[0]}, load generator on CPU {cpus[1]}"
        return {"server": {cpus[0]}, "client": {cpus[1]}}, pinning
    if wanted is False:
        return {"server": None, "client": None}, "none (--no-pin)"
    return {"server": None, "client": None}, f"none (only {len(cpus)} CPU available)"


def _run(
    args: argparse.Namespace,
    quick: bool,
    rounds: int,
    duration: float,
    warmup: float,
    settle: float,
    servers: list[ServerSpec],
    scenarios: list[Scenario],
    fanout_rows: list[FanoutSpec],
    drops_rows: list[FanoutSpec],
    pin: dict[str, set[int] | None],
    pinning: str,
    baseline: Baseline | None,
) -> int:
    """The rounds, then the report."""
    argv = args.argv
    with_fanout = any(s.key == FANOUT for s in scenarios) and bool(fanout_rows)
    with_saturated = any(s.key == FANOUT_SATURATED for s in scenarios) and bool(fanout_rows)
    with_drops = any(s.key == DROPS for s in scenarios) and bool(drops_rows)
    with_redis = any(s.key == REDIS for s in scenarios)
    own = (FANOUT, FANOUT_SATURATED, DROPS, REDIS)
    scenarios = [s for s in scenarios if s.key not in own]  # the server loop's scenarios
    if not scenarios:
        servers = []
    for server in servers:
        server.unavailable = check_available(server)
    LOGS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    commit_at_start, sources_at_start = git_commit(), takeover_fingerprint()
    values: dict[str, dict[str, list[float]]] = {s.key: {c.key: [] for c in scenarios} for s in servers}
    details: dict[str, dict[str, list[dict[str, Any]]]] = {
        s.key: {c.key: [] for c in scenarios} for s in servers
    }
    errors: dict[str, dict[str, list[str]]] = {s.key: {c.key: [] for c in scenarios} for s in servers}
    command = "make bench"
    if argv is None and sys.argv[1:]:
        command = "python -m bench " + " ".join(sys.argv[1:])
    if baseline is not None and not args.baseline:
        command = f"BENCH_BASELINE={baseline.rev} " + command
    if quick and not args.quick:
        command = "BENCH_QUICK=1 " + command
    print(
        f"bench: {len(servers)} servers x {len(scenarios)} scenarios x {rounds} round(s), "
        f"{duration:g} s each ({'quick' if quick else 'full'}); pinning: {pinning if scenarios else '-'}"
        + (f"; then fan-out: {len(fanout_rows)} rows x {rounds} round(s), not pinned" if with_fanout else "")
        + (f"; then fan-out saturated: {len(fanout_rows)} rows x {rounds} round(s)" if with_saturated else "")
        + (f"; then drops: {len(drops_rows)} rows x {rounds} round(s), not pinned" if with_drops else ""),
        flush=True,
    )
    for server in servers:
        if server.unavailable:
            print(f"  skipped {server.key}: {server.unavailable}", flush=True)

    logs = {server.key: open(LOGS / f"{server.key}.log", "w") for server in servers}
    try:
        for round_index in range(rounds):
            shift = round_index % max(len(servers), 1)
            order = servers[shift:] + servers[:shift]
            for scenario in scenarios:
                params = dict(
                    scenario.params(quick), duration=duration, warmup=warmup, timeout=60, client=args.client
                )
                for server in order:
                    if server.unavailable:
                        continue
                    if server.skip_reason(scenario.key) is not None:
                        continue
                    label = f"[round {round_index + 1}/{rounds}] {scenario.key:9} {server.key:16}"
                    result = None
                    for attempt in range(1 + RETRIES):
                        wait_for_quiet(label)
                        try:
                            result = measure(server, scenario, params, pin, logs[server.key], settle)
                        except Exception as error:  # one failure must not end the run
                            message = f"round {round_index + 1}: {error}"
                            errors[server.key][scenario.key].append(message)
                            print(f"{label} ERROR {error}", flush=True)
                            result = None
                            break
                        result["attempt"] = attempt + 1
                        result["round"] = round_index + 1
                        if result.get("foreign_cpu", 0) <= QUIET or attempt == RETRIES:
                            break
                        print(
                            f"{label} disturbed: other processes used {result['foreign_cpu']:.0%} of a core "
                            f"({fmt(result['value'], scenario.unit)} {scenario.unit}); measuring again",
                            flush=True,
                        )
                    if result is None:
                        continue
                    values[server.key][scenario.key].append(result["value"])
                    details[server.key][scenario.key].append(result)
                    extra = ""
                    if result.get("server_cpu") is not None:
                        extra = (
                            f"  CPU: server {result['server_cpu']:.0%}, client {result['client_cpu']:.0%}, "
                            f"other {result['foreign_cpu']:.0%}"
                        )
                    problems = ("  ! " + "; ".join(result["problems"])) if result.get("problems") else ""
                    print(
                        f"{label} {fmt(result['value'], scenario.unit):>10} {scenario.unit}{extra}{problems}",
                        flush=True,
                    )
    finally:
        for log in logs.values():
            log.close()
    # The baseline's twins only in the saturated scenario, whose target compares with them.
    plain_rows = [row for row in fanout_rows if not row.baseline_of]
    fanout = run_fanout(plain_rows, quick, rounds, duration, warmup, LOGS) if with_fanout else None
    saturated = None
    if with_saturated:
        saturated = run_fanout(fanout_rows, quick, rounds, duration, warmup, LOGS, FANOUT_SATURATED)
    drops = run_drops(drops_rows, quick, rounds, LOGS) if with_drops else None
    capacity = run_redis(rounds, LOGS) if with_redis else None
    runtime = time.monotonic() - started
    sources_changed = takeover_fingerprint() != sources_at_start
    if sources_changed:
        print("warning: takeover's sources changed during the run: its figures mix versions", file=sys.stderr)

    summary: dict[str, dict[str, Any]] = {}
    for server in servers:
        summary[server.key] = {}
        for scenario in scenarios:
            cell: dict[str, Any]
            if server.unavailable:
                cell = {"status": "skipped", "reason": server.unavailable}
            elif server.skip_reason(scenario.key) is not None:
                cell = {"status": "n/a", "reason": server.skip_reason(scenario.key)}
            elif values[server.key][scenario.key]:
                runs = values[server.key][scenario.key]
                found = sorted({p for d in details[server.key][scenario.key] for p in d.get("problems", [])})
                cell = {
                    "status": "ok",
                    "median": statistics.median(runs),
                    "values": runs,
                    "min": min(runs),
                    "max": max(runs),
                }
                shares = [d["client_cpu"] for d in details[server.key][scenario.key] if "client_cpu" in d]
                if shares:
                    cell["client_cpu"] = statistics.median(shares)
                    cell["server_cpu"] = statistics.median(
                        d["server_cpu"] for d in details[server.key][scenario.key] if "server_cpu" in d
                    )
                    cell["foreign_cpu_max"] = max(
                        d["foreign_cpu"] for d in details[server.key][scenario.key] if "foreign_cpu" in d
                    )
                if found:
                    cell["problems"] = found
                if errors[server.key][scenario.key]:
                    cell["errors"] = errors[server.key][scenario.key]
            else:
                cell = {"status": "error", "errors": errors[server.key][scenario.key]}
            summary[server.key][scenario.key] = cell

    report: dict[str, Any] = {
        "machine": machine(),
        "config": {
            "command": command,
            "quick": quick,
            "rounds": rounds,
            "duration": duration,
            "warmup": warmup,
            "settle": settle,
            "pinning": pinning if scenarios else "none (the fan-out and drops scenarios are not pinned)",
            "pin": {
                "requested": {True: "--pin", False: "--no-pin", None: "default"}[args.pin],
                "server_cpus": sorted(pin["server"]) if scenarios and pin["server"] else None,
                "client_cpus": sorted(pin["client"]) if scenarios and pin["client"] else None,
            },
            "client": args.client,
            "servers": [s.key for s in servers],
            "scenarios": [s.key for s in scenarios],
            "scenario_params": {s.key: s.params(quick) for s in scenarios},
            "scenario_descriptions": {
                s.key: describe_scenario(s, s.params(quick), duration) for s in scenarios
            },
            "server_notes": {s.key: s.notes for s in servers},
            "server_labels": {s.key: s.label for s in servers},
            "baseline_of": {s.key: s.baseline_of for s in servers if s.baseline_of},
        },
        "baseline": baseline.describe() if baseline is not None else None,
        "fanout": fanout,
        "fanout_saturated": saturated,
        "drops": drops,
        "redis": capacity,
        "runtime_seconds": runtime,
        "takeover_at_start": {"commit": commit_at_start, "sources": sources_at_start},
        "takeover_sources_changed_during_run": sources_changed,
        "summary": summary,
        "details": details,
    }
    report["targets"] = evaluate_targets(summary)
    report["threaded"] = evaluate_threaded(summary)
    if baseline is not None:
        report["before_after"] = before_after(report)
    table = markdown(report)
    text = "# takeover benchmark\n\n" + machine_markdown(report) + "\n" + table
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kind = "quick" if quick else "full"
    for name in ("latest", f"{kind}-{stamp}"):
        (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
        (RESULTS / f"{name}.md").write_text(text)
    print()
    print(text)
    print(f"wrote {RESULTS.relative_to(ROOT)}/latest.json and latest.md; total {runtime:.0f} s")
    return 0
