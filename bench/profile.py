"""Profile one server under one scenario's load with py-spy, and summarise where the time goes.

    python -m bench.profile [--server takeover] [--scenario handshake] [--seconds 8]
                            [--rate 200] [--native] [--lines] [--baseline REV] [--out DIR]
    python -m bench.profile --scenario fan-out --server hub-redis [--publishes 100] ...

Starts the server as the harness does (pinned to the first CPU, the load
generator to the second), runs the load generator for ``--seconds`` plus
warm-up, and records the server with ``py-spy record --nonblocking`` (it does
not pause the server to sample it) during the measured window. Writes
DIR/<server>-<scenario>.txt (py-spy's raw, collapsed stacks; load it in
speedscope or flamegraph.pl) and prints the functions with the largest share
of the samples, inclusive (the function and what it called) and self. Needs
py-spy (``.venv/bin/pip install py-spy``) and, to attach, ptrace rights (root,
or ``kernel.yama.ptrace_scope=0``). The figure the load generator printed is
lower than in ``make bench``: sampling costs the server some CPU.

``--scenario fan-out`` profiles a fan-out row (bench/fanout.py; ``--server`` is
one of its keys) at one rate, ``--publishes`` per second, with the scenario's
full number of clients and nothing pinned: py-spy records gunicorn and all its
workers (``--subprocesses``), and the summary's shares are of all their samples.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.config import RESULTS
from bench.fanout import FANOUT, FANOUT_SATURATED, fanout_params, measure_fanout, print_result, saturation_pin
from bench.loadgen import ServerProcess, raise_nofile, run_loadgen
from bench.specs import FANOUT_SERVERS, SCENARIO_BY_KEY, SERVERS, ServerSpec


def summarise(raw: Path, top: int = 40) -> str:
    """The ``top`` functions by inclusive and by self share of py-spy's raw samples."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "no samples\n"
    out = [f"{total} samples", "", "inclusive (the function and what it called):"]
    out += [f"  {count / total:6.1%}  {frame}" for frame, count in inclusive.most_common(top)]
    out += ["", "self:"]
    out += [f"  {count / total:6.1%}  {frame}" for frame, count in own.most_common(top)]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="takeover", help=",".join(s.key for s in SERVERS))
    parser.add_argument("--scenario", default="handshake", help=",".join(SCENARIO_BY_KEY))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="py-spy --native: C frames too")
    parser.add_argument(
        "--lines", action="store_true", help="by line (the line running) instead of by function"
    )
    parser.add_argument("--baseline", metavar="REV", help="profile takeover@REV's row instead (a worktree)")
    parser.add_argument("--publishes", type=float, default=100.0, help="fan-out: publishes per second")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", type=Path, default=RESULTS / "profiles")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(py_spy, os.X_OK):
        print("python -m bench.profile needs py-spy: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    if args.scenario in (FANOUT, FANOUT_SATURATED):
        return profile_fanout(args, py_spy)
    specs = {s.key: s for s in SERVERS}
    if args.server not in specs:
        print(f"unknown server {args.server!r}", file=sys.stderr)
        return 2
    scenario = SCENARIO_BY_KEY[args.scenario]
    raise_nofile()
    cpus = sorted(os.sched_getaffinity(0))
    pin: dict[str, set[int] | None] = (
        {"server": {cpus[0]}, "client": {cpus[1]}} if len(cpus) >= 2 else {"server": None, "client": None}
    )
    baseline = None
    spec: ServerSpec = specs[args.server]
    if args.baseline:
        from bench.baseline import Baseline

        baseline = Baseline(args.baseline)
        baseline.create()
        twins = baseline.servers([spec])
        if not twins:
            baseline.remove()
            print(f"{args.server} has no baseline row", file=sys.stderr)
            return 2
        spec = twins[0]
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / f"{spec.key}-{scenario.key}{'-lines' if args.lines else ''}.txt"
    log_path = args.out / f"{spec.key}-{scenario.key}.log"
    try:
        with open(log_path, "w") as log:
            server = ServerProcess(spec, scenario.key, pin["server"], log)
            try:
                server.wait_ready()
                recorder: dict[str, Any] = {}
                command = [
                    py_spy, "record", "--nonblocking", "-f", "raw", "-r", str(args.rate),
                    "-d", str(max(1, int(args.seconds))), "-o", str(raw), "-p", str(server.process.pid),
                ]
                if args.native:
                    command.insert(2, "--native")
                if "gunicorn" in " ".join(spec.command(scenario.key, 0) or []):
                    command.insert(2, "--subprocesses")  # the arbiter forks the worker that serves
                if not args.lines:
                    command.insert(2, "--function")  # frames named by the function's first line

                def on_event(event: dict[str, Any], loadgen: Any) -> None:
                    if event.get("event") == "start" and "process" not in recorder:
                        recorder["process"] = subprocess.Popen(
                            command, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
                        )

                params = dict(
                    scenario.params(False), duration=args.seconds + 0.5, warmup=1.0, timeout=60, client="lean"
                )
                params["url"] = spec.url(server.port)
                started = time.monotonic()
                result = run_loadgen(params, server, pin["client"], on_event)
                process = recorder.get("process")
                if process is not None:
                    process.wait(max(10.0, args.seconds + 10 - (time.monotonic() - started)))
            finally:
                server.stop()
    finally:
        if baseline is not None:
            baseline.remove()
    value = {
        "small": "messages_per_second", "large": "mb_per_second", "handshake": "handshakes_per_second",
        "broadcast": "deliveries_per_second",
    }.get(scenario.key)
    figure = f"{result.get(value, 0):,.0f} {scenario.unit}" if value else ""
    print(f"{spec.label}, {scenario.title}, under py-spy: {figure}; raw stacks in {raw}")
    if not raw.exists():
        print(f"py-spy wrote nothing: see {log_path}", file=sys.stderr)
        return 1
    print(summarise(raw, args.top))
    return 0


def profile_fanout(args: argparse.Namespace, py_spy: str) -> int:
    """py-spy on a fan-out row's gunicorn and workers during one rate's counted window (``fan-out-saturated``:
    pinned, with the C driver and the scenario's publishers)."""
    specs = {s.key: s for s in FANOUT_SERVERS}
    if args.server not in specs:
        print(f"--scenario fan-out: --server is one of {', '.join(specs)}", file=sys.stderr)
        return 2
    spec = specs[args.server]
    raise_nofile()
    saturated = args.scenario == FANOUT_SATURATED
    params = dict(fanout_params(False, args.seconds + 0.5, 1.0, args.scenario), rates=[args.publishes])
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / f"{spec.key}-{args.scenario}{'-lines' if args.lines else ''}.txt"
    log_path = args.out / f"{spec.key}-{args.scenario}.log"
    recorder: dict[str, Any] = {}
    with open(log_path, "w") as log:
        command = [
            py_spy, "record", "--nonblocking", "--subprocesses", "-f", "raw", "-r", str(args.rate),
            "-d", str(max(1, int(args.seconds))), "-o", str(raw),
        ]
        if args.native:
            command.insert(2, "--native")
        if not args.lines:
            command.insert(2, "--function")

        def observe(event: dict[str, Any], server: ServerProcess, driver: Any) -> None:
            if event.get("event") == "start" and "process" not in recorder:
                recorder["process"] = subprocess.Popen(
                    [*command, "-p", str(server.process.pid)],
                    stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
                )

        pin = saturation_pin() if saturated else None
        result = measure_fanout(spec, params, log, observe, pin=pin, native=saturated)
        process = recorder.get("process")
        if process is not None:
            process.wait(args.seconds + 20)
    print_result(f"{spec.key} under py-spy", result)
    if not raw.exists():
        print(f"py-spy wrote nothing: see {log_path}", file=sys.stderr)
        return 1
    print(f"raw stacks in {raw}")
    print(summarise(raw, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
