"""One measurement: a fresh server, one scenario against it, its figure and CPU shares; and
waiting, before it, until other processes leave the CPUs alone."""

from __future__ import annotations

import time
from typing import Any

from bench.loadgen import ServerProcess, run_loadgen
from bench.proc import affinity, cpu_seconds, foreign_cpu_share, machine_busy_seconds, rss_kb
from bench.specs import Scenario, ServerSpec

QUIET = 0.15  # cores: more CPU than this used by other processes delays the next measurement
RETRIES = 2  # a measurement disturbed by them is taken again, at most this many times
QUIET_WAIT = 60.0  # seconds to wait for it at most, then measure anyway (and say so)


# -- one measurement --------------------------------------------------------------------


def measure(
    spec: ServerSpec,
    scenario: Scenario,
    params: dict[str, Any],
    pin: dict[str, set[int] | None],
    log: Any,
    settle: float,
) -> dict[str, Any]:
    """Start the server, run one scenario against it, stop it; return the load generator's result
    with "value" (the figure in the scenario's unit) and the server's CPU time and RSS added."""
    server = ServerProcess(spec, scenario.key, pin["server"], log)
    try:
        server.wait_ready()
        pid = server.process.pid
        params = dict(params, url=spec.url(server.port))
        marks: dict[str, float] = {}
        cpus: dict[str, dict[str, list[int]]] = {}

        def on_event(event: dict[str, Any], loadgen: Any) -> None:
            kind = event.get("event")
            if kind in ("start", "end"):
                marks[f"time_{kind}"] = time.monotonic()
                marks[f"cpu_{kind}"] = cpu_seconds(pid)
                marks[f"client_{kind}"] = cpu_seconds(loadgen.pid)
                marks[f"all_{kind}"] = machine_busy_seconds()
                if kind == "start":  # every process and thread by now (gunicorn's worker too)
                    cpus["server"] = affinity(pid)
                    cpus["client"] = affinity(loadgen.pid)
            elif kind == "ready":  # idle: warmed up, nothing open
                time.sleep(settle)
                marks["rss_before"] = rss_kb(pid)
                loadgen.stdin.write("go\n")
                loadgen.stdin.flush()
            elif kind == "open":  # idle: every connection open, nothing sent since
                time.sleep(settle)
                marks["rss_after"] = rss_kb(pid)
                marks["opened"] = event.get("count", 0)
                loadgen.stdin.write("close\n")
                loadgen.stdin.flush()

        result = run_loadgen(params, server, pin["client"], on_event)
        if server.imports:
            result["imports"] = server.imports  # the takeover it ran (checked in wait_ready)
        if result.get("error"):
            raise RuntimeError(f"load generator: {result['error']}")
        if "cpu_start" in marks and "cpu_end" in marks:
            # Shares of one core over the measured window: the server's, the load
            # generator's, and everyone else's (another job on the machine skews figures).
            window = marks["time_end"] - marks["time_start"]
            server_cpu = marks["cpu_end"] - marks["cpu_start"]
            client_cpu = marks["client_end"] - marks["client_start"]
            everything = marks["all_end"] - marks["all_start"]
            result["server_cpu"] = server_cpu / window
            result["client_cpu"] = client_cpu / window
            result["foreign_cpu"] = max(0.0, everything - server_cpu - client_cpu) / window
        if scenario.key == "idle":
            result["rss_before_kb"] = marks["rss_before"]
            result["rss_after_kb"] = marks["rss_after"]
            result["value"] = (marks["rss_after"] - marks["rss_before"]) / result["connections"]
        elif scenario.key == "small":
            result["value"] = result["messages_per_second"]
        elif scenario.key == "large":
            result["value"] = result["mb_per_second"]
        elif scenario.key == "handshake":
            result["value"] = result["handshakes_per_second"]
        else:
            result["value"] = result["deliveries_per_second"]
        problems = []
        if cpus:
            # Which CPUs the server's and the load generator's threads were allowed, each
            # as {"CPUS": [thread ids]}: with pinning, one set each, the one asked for.
            result["affinity"] = {side: {k: len(v) for k, v in sets.items()} for side, sets in cpus.items()}
            problems += pinning_problems(cpus, pin)
        if result.get("wrong_size"):
            problems.append(f"{result['wrong_size']} echoes of the wrong size")
        if result.get("wrong_type"):
            problems.append(f"{result['wrong_type']} echoes of the wrong type (text/binary)")
        if scenario.key == "broadcast" and not result.get("complete", True):
            problems.append(f"a batch did not arrive in full ({result['delivered']} of {result['expected']})")
        if scenario.key == "handshake" and result.get("failures"):
            problems.append(f"{result['failures']} failed handshakes ({result.get('first_failure')})")
        if problems:
            result["problems"] = problems
        return result
    finally:
        server.stop()


def pinning_problems(cpus: dict[str, dict[str, list[int]]], pin: dict[str, set[int] | None]) -> list[str]:
    """What ran outside the CPU asked for: a process or thread of the server (or the load
    generator) allowed other CPUs. Nothing when nothing was pinned."""
    problems = []
    for side in ("server", "client"):
        wanted = pin.get(side)
        if not wanted:
            continue
        expected = ",".join(str(cpu) for cpu in sorted(wanted))
        stray = {key: len(tids) for key, tids in cpus.get(side, {}).items() if key != expected}
        if stray:
            where = ", ".join(f"{count} thread(s) allowed CPUs {key}" for key, count in sorted(stray.items()))
            problems.append(f"{side} not pinned to CPU {expected}: {where}")
    return problems


def wait_for_quiet(label: str) -> None:
    """Wait (a bounded time) until other processes leave the CPUs alone."""
    deadline = time.monotonic() + QUIET_WAIT
    busy = foreign_cpu_share(0.5)
    if busy <= QUIET:
        return
    print(f"{label} waiting: other processes use {busy:.0%} of a core", flush=True)
    while busy > QUIET and time.monotonic() < deadline:
        busy = foreign_cpu_share(1.0)
    if busy > QUIET:
        print(
            f"{label} measuring anyway after {QUIET_WAIT:g} s: other processes still use {busy:.0%}",
            flush=True,
        )
