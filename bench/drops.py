"""The drops scenario (``python -m bench --scenarios drops``): members of one room behind a
proxy that cuts every connection on a schedule, resuming where they left off.

Issue 20's setup, as a benchmark: for each row of ``DROPS_SERVERS`` (bench/specs.py), once
per round, a redis-server (bench/redisproc.py), the row's app on gunicorn with two workers
(bench/servers/fanout_gunicorn.py), then one Node process, bench/node/drops.js, which runs
the proxy in front of the server, connects the members through it and a publisher past it,
publishes numbered messages at a fixed rate, and cuts every proxied connection every few
seconds, refusing new ones for two. takeover's members join with ``envelope=1`` and come
back with ``since=<the last offset they got>``; Flask-SocketIO's are socket.io-client
sockets reconnecting by themselves (Flask-SocketIO has no way to resume).

Reported per row, summed over the rounds: delivery (distinct messages received / published x
members), duplicates, messages out of order, reconnects, reconnects the server could not
resume (it says ``not-resumed``: the room no longer kept what followed ``since``; the rows
keep 1,000 messages, 25 s at 40/s, longer than a member is away) and gap envelopes. These are
counts, not speeds: nothing is pinned, and the machine's noise does not change them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.fanout import wait_workers
from bench.loadgen import ServerProcess, run_loadgen
from bench.redisproc import RedisServer
from bench.specs import SCENARIO_BY_KEY, FanoutSpec, check_available, describe_scenario

DROPS = "drops"
COUNTS = (
    "expected", "delivered", "duplicates", "reordered", "reconnects", "gaps", "not_resumed", "cuts",
    "published",
)


def drops_params(quick: bool) -> dict[str, Any]:
    """The driver's parameters for this run, with its time budget."""
    params = SCENARIO_BY_KEY[DROPS].params(quick)
    params.setdefault("timeout", 60)
    params["budget"] = 2 * params["timeout"] + params["duration"] + params["drain"] + 30
    return params


def measure_drops(spec: FanoutSpec, params: dict[str, Any], log: Any) -> dict[str, Any]:
    """One row, one round: Redis, the server, the driver; the driver's counts."""
    redis = RedisServer(log)
    try:
        redis.wait_ready()
        server = ServerProcess(spec.server(redis.url), DROPS, None, log)
        try:
            server.wait_ready()
            wait_workers(server, spec.workers)
            urls = spec.urls(server.port)
            run = dict(params, client=spec.client, target=server.port, pubUrl=urls["pubUrl"])

            def on_event(event: dict[str, Any], driver: Any) -> None:
                if event.get("event") == "cut":
                    log.write(f"drops: cut at message {event['n']}\n")

            result = run_loadgen(run, server, None, on_event, script="drops.js", budget=params["budget"] + 30)
        finally:
            server.stop()
    finally:
        redis.stop()
    if result.get("error"):
        raise RuntimeError(f"drops driver: {result['error']}")
    return result


def summarise(results: list[dict[str, Any]], errors: list[str], unavailable: str) -> dict[str, Any]:
    """One row's rounds: the counts summed, delivery as a fraction."""
    if unavailable:
        return {"status": "skipped", "reason": unavailable}
    if not results:
        return {"status": "error", "errors": errors}
    cell: dict[str, Any] = {"status": "ok", "rounds": len(results), "errors": errors}
    for key in COUNTS:
        cell[key] = sum(result.get(key, 0) for result in results)
    cell["delivery"] = cell["delivered"] / cell["expected"] if cell["expected"] else None
    cell["members"] = results[0]["members"]
    cell["complete_members"] = sum(result["complete_members"] for result in results)
    cell["member_rounds"] = sum(result["members"] for result in results)
    return cell


def run_drops(specs: list[FanoutSpec], quick: bool, rounds: int, logs: Path) -> dict[str, Any]:
    """Every row, ``rounds`` times (the order rotating); the report's "drops" part."""
    params = drops_params(quick)
    unavailable = {spec.key: check_available(spec) for spec in specs}
    for key, reason in unavailable.items():
        if reason:
            print(f"  skipped drops {key}: {reason}", flush=True)
    runnable = [spec for spec in specs if not unavailable[spec.key]]
    results: dict[str, list[dict[str, Any]]] = {spec.key: [] for spec in specs}
    errors: dict[str, list[str]] = {spec.key: [] for spec in specs}
    logs.mkdir(parents=True, exist_ok=True)
    files = {spec.key: open(logs / f"drops-{spec.key}.log", "w") for spec in runnable}
    try:
        for round_index in range(rounds):
            shift = round_index % max(len(runnable), 1)
            for spec in runnable[shift:] + runnable[:shift]:
                label = f"[round {round_index + 1}/{rounds}] {DROPS:9} {spec.key:16}"
                try:
                    result = measure_drops(spec, params, files[spec.key])
                except Exception as error:  # one failure must not end the run
                    errors[spec.key].append(f"round {round_index + 1}: {error}")
                    print(f"{label} ERROR {error}", flush=True)
                    continue
                results[spec.key].append(result)
                print(f"{label} {result_line(result)}", flush=True)
    finally:
        for file in files.values():
            file.close()
    return {
        "params": params,
        "description": describe_scenario(SCENARIO_BY_KEY[DROPS], params, params["duration"]),
        "rows": [spec.key for spec in specs],
        "labels": {spec.key: spec.label for spec in specs},
        "notes": {spec.key: spec.notes for spec in specs},
        "summary": {
            spec.key: summarise(results[spec.key], errors[spec.key], unavailable[spec.key]) for spec in specs
        },
        "details": results,
    }


def result_line(counts: dict[str, Any]) -> str:
    """Delivery, duplicates, reordering, reconnects and gaps of one round (or of a summary)."""
    delivery = counts["delivered"] / counts["expected"] if counts["expected"] else 0.0
    return (
        f"delivered {delivery:.2%} ({counts['delivered']:,} of {counts['expected']:,}), "
        f"duplicates {counts['duplicates']:,}, out of order {counts['reordered']:,}, "
        f"reconnects {counts['reconnects']:,} ({counts.get('not_resumed', 0):,} not resumed), "
        f"gaps {counts['gaps']:,} ({counts['cuts']} cuts)"
    )


def drops_markdown(drops: dict[str, Any]) -> str:
    """The drops table: one line per row."""
    out = [
        "## Drops: every connection cut on a schedule, clients resuming",
        "",
        drops["description"],
        "",
        "| server | delivered | duplicates | out of order | reconnects | not resumed (told) | gaps reported "
        "| rounds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in drops["rows"]:
        cell, label = drops["summary"][key], drops["labels"][key]
        if cell["status"] != "ok":
            reason = cell.get("reason") or "; ".join(cell.get("errors", [])) or cell["status"]
            out.append(f"| {label} | {cell['status']}: {reason} | | | | | | |")
            continue
        out.append(
            f"| {label} | {cell['delivery']:.2%} ({cell['delivered']:,} of {cell['expected']:,}) | "
            f"{cell['duplicates']:,} | {cell['reordered']:,} | {cell['reconnects']:,} | "
            f"{cell['not_resumed']:,} | {cell['gaps']:,} | {cell['rounds']} |"
        )
    out.append("")
    for key in drops["rows"]:
        out.append(f"- {drops['labels'][key]}: {drops['notes'][key]}")
    return "\n".join(out) + "\n"
