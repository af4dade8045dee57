"""The fan-out scenario (``python -m bench --scenarios fan-out``): one room, many clients over
several processes, one publisher at fixed rates.

For each row of ``FANOUT_SERVERS`` (bench/specs.py), once per round: a redis-server if the
row has one (bench/redisproc.py, on a free port, killed after), the row's app on gunicorn
(bench/servers/fanout_gunicorn.py; the harness waits for every worker's ready line), then
one Node process, bench/node/fanout.js, which connects the clients (each server answers
the join with its worker's pid, and the driver counts clients per pid), connects the
publisher, and publishes at each rate in turn on the same connections. The driver stamps
each message with its send time and computes latency on receipt with the same clock.

Nothing is pinned: the workers, redis-server and the driver share the machine's CPUs.
The second scenario, ``fan-out-saturated`` (issue 21), runs the same rows at saturation: the
server and its redis-server on one CPU, the driver on another (the takeover rows' driver is
then bench/native/fanout_driver.c, far cheaper per delivery than Node, so that the server is
what saturates), several publishers taking turns, and rates past what one core delivers, each
rate on a server of its own (a backlog past saturation outlives any drain); its
target compares each takeover row's CPU per delivery with its ``--baseline`` twin's.
The harness reads the CPU time of the server (gunicorn and its workers), of
redis-server and of the driver over each counted window, and everyone else's as
"other". The order of the rows rotates from round to round; figures are medians over the
rounds (bench/fanout_report.py).
"""

from __future__ import annotations

import os
import queue
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import native_driver
from bench.fanout_report import evaluate_fanout_targets, evaluate_saturation_targets
from bench.loadgen import READY_TIMEOUT, ServerProcess, run_loadgen
from bench.measure import QUIET, RETRIES, wait_for_quiet
from bench.proc import cpu_seconds, machine_busy_seconds
from bench.redisproc import Brokers
from bench.specs import SCENARIO_BY_KEY, FanoutSpec, check_available, describe_scenario

FANOUT = "fan-out"
FANOUT_SATURATED = "fan-out-saturated"
#: What each worker prints once it has loaded the app (bench/servers/fanout_gunicorn.py).
WORKER_READY = "fanout-worker-ready"
WORKER_LINE = re.compile(WORKER_READY + r" pid=(\d+)")
OPEN_TIMEOUT = 60.0  # seconds for the driver to connect the clients, and again for the probe
PAUSE = 0.5  # seconds between the probe and the first rate, and between rates
#: The figures that get a median over the rounds (and the CPU shares, below).
FIGURES = ("deliveries_per_second", "p50_ms", "p99_ms", "publish_rate", "max_publish_lag_ms")
SHARES = ("server_cpu", "redis_cpu", "client_cpu", "foreign_cpu")


def fanout_params(quick: bool, duration: float, warmup: float, scenario: str = FANOUT) -> dict[str, Any]:
    """The driver's parameters for this run (the scenario's, with the run's durations)."""
    params = SCENARIO_BY_KEY[scenario].params(quick)
    params.update(duration=duration, warmup=warmup, timeout=OPEN_TIMEOUT, pause=PAUSE)
    per_rate = params["warmup"] + params["duration"] + params["drain"] + 2 * PAUSE
    params["budget"] = 2 * OPEN_TIMEOUT + len(params["rates"]) * per_rate + 30
    return params


def wait_workers(server: ServerProcess, count: int) -> list[int]:
    """The pids of the ``count`` workers, from their ready lines (after gunicorn's own)."""
    deadline = time.monotonic() + READY_TIMEOUT
    pids: list[int] = []
    for _ in range(100 + count):  # the workers' lines; anything else printed is skipped
        if len(pids) >= count:
            return pids
        try:
            line = server.lines.get(max(deadline - time.monotonic(), 0.0))
        except queue.Empty:
            break
        if line is None:
            raise RuntimeError("gunicorn exited before its workers were ready (see the log)")
        pids += [int(pid) for pid in WORKER_LINE.findall(line)]
    raise RuntimeError(f"{len(pids)} of {count} workers ready within {READY_TIMEOUT:g} s")


#: ``observe(event, server, driver)``: called with each of the driver's progress lines.
Observer = Callable[[dict[str, Any], ServerProcess, Any], None]


def measure_fanout(
    spec: FanoutSpec, params: dict[str, Any], log: Any, observe: Observer | None = None,
    pin: tuple[set[int], set[int]] | None = None, native: bool = False,
) -> dict[str, Any]:
    """One row, every rate: start Redis (if the row has it) and the server, run the driver, stop
    both. Returns the driver's result with CPU shares per rate and the worker pids.
    ``observe`` sees the driver's events as they come (bench/profile.py starts py-spy so).
    ``pin``: (the server's and its Redis's CPUs, the driver's). ``native``: a "ws" row's members
    are bench/native/fanout_driver.c's (when it builds) instead of bench/node/fanout.js's."""
    redis = Brokers(spec.brokers, log) if spec.redis else None
    try:
        if redis is not None:
            redis.wait_ready()
            if pin is not None:
                for pid in redis.pids:
                    os.sched_setaffinity(pid, pin[0])
        server_cpus, driver_cpus = pin if pin is not None else (None, None)
        server = ServerProcess(spec.server(redis.url if redis else None), FANOUT, server_cpus, log)
        try:
            server.wait_ready()
            workers = wait_workers(server, spec.workers)
            run = dict(params, client=spec.client, **spec.urls(server.port))
            marks: dict[tuple[float, str], dict[str, float]] = {}

            def on_event(event: dict[str, Any], driver: Any) -> None:
                if observe is not None:
                    observe(event, server, driver)
                if event.get("event") in ("start", "end"):
                    marks[(event["rate"], event["event"])] = {
                        "time": time.monotonic(),
                        "server": cpu_seconds(server.process.pid),
                        "redis": sum(cpu_seconds(pid) for pid in redis.pids) if redis is not None else 0.0,
                        "client": cpu_seconds(driver.pid),
                        "all": machine_busy_seconds(),
                    }

            budget = params["budget"] + 30
            binary = native_driver.build() if native and spec.client == "ws" else None
            command = native_driver.command(binary, run) if binary is not None else None
            result = run_loadgen(run, server, driver_cpus, on_event, "fanout.js", budget, command)
        finally:
            server.stop()
    finally:
        if redis is not None:
            redis.stop()
    if result.get("error"):
        raise RuntimeError(f"fan-out driver: {result['error']}")
    result["workers"] = workers
    for row in result["rates"]:
        start, end = marks.get((row["rate"], "start")), marks.get((row["rate"], "end"))
        if start is None or end is None:
            continue
        window = end["time"] - start["time"]
        used = {key: end[key] - start[key] for key in ("server", "redis", "client", "all")}
        row["server_cpu"] = used["server"] / window
        row["redis_cpu"] = used["redis"] / window
        row["client_cpu"] = used["client"] / window
        row["foreign_cpu"] = max(0.0, used["all"] - used["server"] - used["redis"] - used["client"]) / window
        row["problems"] = rate_problems(row)
    result["problems"] = [] if set(result["per_pid"]) <= {str(pid) for pid in workers} else [
        f"clients answered with pids {sorted(result['per_pid'])}, not the workers' {sorted(workers)}"
    ]
    if result.get("wrong_messages"):
        result["problems"].append(f"{result['wrong_messages']} messages of the wrong size or type")
    return result


def measure_each_rate(
    spec: FanoutSpec, params: dict[str, Any], log: Any, pin: tuple[set[int], set[int]] | None, native: bool
) -> dict[str, Any]:
    """:func:`measure_fanout` once per rate, each on a server (and Redis) of its own: past
    saturation a backlog outlives any drain, and would be delivered in the next rate's window.
    The clients per worker are the first rate's."""
    merged: dict[str, Any] | None = None
    for rate in params["rates"]:
        result = measure_fanout(spec, dict(params, rates=[rate]), log, pin=pin, native=native)
        if merged is None:
            merged = result
        else:
            merged["rates"] += result["rates"]
            merged["problems"] += [p for p in result["problems"] if p not in merged["problems"]]
            merged["wrong_messages"] = merged.get("wrong_messages", 0) + result.get("wrong_messages", 0)
    assert merged is not None, "a scenario has rates"
    return merged


def rate_problems(row: dict[str, Any]) -> list[str]:
    """What is wrong with one rate's figures, in words."""
    problems = []
    if row["lost"]:
        problems.append(f"{row['lost']:,} of {row['expected']:,} messages lost")
    if row["closed_members"]:
        problems.append(f"{row['closed_members']} clients closed")
    if row["publish_rate"] < 0.95 * row["rate"]:
        problems.append(f"the publisher reached {row['publish_rate']:.0f} of {row['rate']:g} publishes/s")
    return problems


def saturation_pin() -> tuple[set[int], set[int]] | None:
    """The saturated scenario's CPUs: (the server and its Redis, the driver); None on one CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    return ({cpus[0]}, {cpus[1]}) if len(cpus) >= 2 else None


def run_fanout(
    specs: list[FanoutSpec], quick: bool, rounds: int, duration: float, warmup: float, logs: Path,
    scenario: str = FANOUT,
) -> dict[str, Any]:
    """Every row, ``rounds`` times (the order rotating); the report's "fanout" part (or, for
    ``fan-out-saturated``, its "fanout_saturated" part)."""
    params = fanout_params(quick, duration, warmup, scenario)
    saturated = scenario == FANOUT_SATURATED
    pin = saturation_pin() if saturated else None
    if saturated and pin is None:
        print("  note: fan-out at saturation needs two CPUs to pin the server and the driver apart")
    native = saturated and native_driver.build() is not None
    if saturated and not native:
        print("  note: no C compiler (cc): the takeover rows' driver is Node's", flush=True)
    unavailable = {spec.key: check_available(spec) for spec in specs}
    for key, reason in unavailable.items():
        if reason:
            print(f"  skipped fan-out {key}: {reason}", flush=True)
    runnable = [spec for spec in specs if not unavailable[spec.key]]
    details: dict[str, list[dict[str, Any]]] = {spec.key: [] for spec in specs}
    errors: dict[str, list[str]] = {spec.key: [] for spec in specs}
    logs.mkdir(parents=True, exist_ok=True)
    files = {spec.key: open(logs / f"{scenario}-{spec.key}.log", "w") for spec in runnable}
    try:
        for round_index in range(rounds):
            shift = round_index % max(len(runnable), 1)
            for spec in runnable[shift:] + runnable[:shift]:
                label = f"[round {round_index + 1}/{rounds}] {scenario:9} {spec.key:16}"
                result = None
                for attempt in range(1 + RETRIES):
                    wait_for_quiet(label)
                    try:
                        if saturated:
                            result = measure_each_rate(spec, params, files[spec.key], pin, native)
                        else:
                            result = measure_fanout(spec, params, files[spec.key])
                    except Exception as error:  # one failure must not end the run
                        errors[spec.key].append(f"round {round_index + 1}: {error}")
                        print(f"{label} ERROR {error}", flush=True)
                        result = None
                        break
                    result["attempt"], result["round"] = attempt + 1, round_index + 1
                    busy = max((row.get("foreign_cpu", 0.0) for row in result["rates"]), default=0.0)
                    if busy <= QUIET or attempt == RETRIES:
                        break
                    print(f"{label} disturbed: other processes used {busy:.0%} of a core; measuring again")
                if result is None:
                    continue
                details[spec.key].append(result)
                print_result(label, result)
    finally:
        for file in files.values():
            file.close()
    summary = {
        spec.key: summarise(details[spec.key], errors[spec.key], unavailable[spec.key]) for spec in specs
    }
    baseline_of = {spec.key: spec.baseline_of for spec in specs if spec.baseline_of}
    targets = (
        evaluate_saturation_targets(summary, params["rates"], baseline_of)
        if saturated
        else evaluate_fanout_targets(summary, params["rates"])
    )
    return {
        "scenario": scenario,
        "pinned": f"server and redis-server on CPU {min(pin[0])}, driver on CPU {min(pin[1])}"
        if pin
        else "not pinned",
        "driver": "bench/native/fanout_driver.c for takeover's rows" if native else "bench/node/fanout.js",
        "baseline_of": baseline_of,
        "params": params,
        "description": describe_scenario(SCENARIO_BY_KEY[scenario], params, duration),
        "rows": [spec.key for spec in specs],
        "labels": {spec.key: spec.label for spec in specs},
        "notes": {spec.key: spec.notes for spec in specs},
        "workers": {spec.key: spec.workers for spec in specs},
        "summary": summary,
        "details": details,
        "targets": targets,
    }


def print_result(label: str, result: dict[str, Any]) -> None:
    counts = ", ".join(str(result["per_pid"].get(str(pid), 0)) for pid in result["workers"])
    print(f"{label} clients per worker: {counts} (connected in {result['open_seconds']:.1f} s)", flush=True)
    for row in result["rates"]:
        cpu = ""
        if "server_cpu" in row:
            cpu = (
                f"  CPU: server {row['server_cpu']:.0%}, redis {row['redis_cpu']:.0%}, "
                f"driver {row['client_cpu']:.0%}, other {row['foreign_cpu']:.0%}"
            )
        problems = ("  ! " + "; ".join(row["problems"])) if row.get("problems") else ""
        p50 = "-" if row["p50_ms"] is None else f"{row['p50_ms']:.1f}"
        p99 = "-" if row["p99_ms"] is None else f"{row['p99_ms']:.1f}"
        print(
            f"{label} {row['rate']:>5g}/s {row['deliveries_per_second']:>10,.0f} deliveries/s, "
            f"p50 {p50} ms, p99 {p99} ms, lost {row['lost']:,}{cpu}{problems}",
            flush=True,
        )


def summarise(results: list[dict[str, Any]], errors: list[str], unavailable: str) -> dict[str, Any]:
    """One row's rounds: per rate, medians of the figures and CPU shares, lost messages summed."""
    if unavailable:
        return {"status": "skipped", "reason": unavailable}
    if not results:
        return {"status": "error", "errors": errors}
    rates: dict[str, dict[str, Any]] = {}
    for result in results:
        for row in result["rates"]:
            cell = rates.setdefault(str(row["rate"]), {"rate": row["rate"], "rounds": [], "problems": []})
            cell["rounds"].append(row)
            cell["problems"] += [p for p in row.get("problems", []) if p not in cell["problems"]]
    for cell in rates.values():
        runs = cell["rounds"]
        for figure in (*FIGURES, *SHARES):
            values = [run[figure] for run in runs if run.get(figure) is not None]
            cell[figure] = statistics.median(values) if values else None
        cell["values"] = [run["deliveries_per_second"] for run in runs]
        cell["lost"] = sum(run["lost"] for run in runs)
        cell["expected"] = sum(run["expected"] for run in runs)
        cell["target_deliveries_per_second"] = cell["rate"] * results[0]["members"]
        del cell["rounds"]
    return {
        "status": "ok",
        "rates": rates,
        "per_worker": [
            [result["per_pid"].get(str(pid), 0) for pid in result["workers"]] for result in results
        ],
        "open_seconds": [result["open_seconds"] for result in results],
        "problems": sorted({p for result in results for p in result.get("problems", [])}),
        "errors": errors,
    }
