"""``python -m bench --scenarios fan-out``'s parts that need no run (bench/fanout.py, bench/fanout_report.py).

The workers' ready lines, one round's figures summarised over rounds, the targets
(3x Flask-SocketIO at an equal or lower p99; the Redis Hub at 0.7x memory://) and
the table, from made-up driver results.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import pytest

from tests.paths import ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.fanout import WORKER_LINE, fanout_params, rate_problems, summarise
from bench.fanout_report import evaluate_fanout_targets, fanout_markdown
from bench.specs import FANOUT_SERVERS, check_available


def rate(rate: float, dps: float, p99: float, lost: int = 0, members: int = 4000) -> dict[str, Any]:
    published = int(rate * 3)
    return {
        "rate": rate,
        "published": published,
        "publish_rate": rate,
        "max_publish_lag_ms": 1.0,
        "deliveries_per_second": dps,
        "expected": published * members,
        "received": published * members - lost,
        "lost": lost,
        "p50_ms": p99 / 2,
        "p99_ms": p99,
        "closed_members": 0,
        "server_cpu": 0.5,
        "redis_cpu": 0.01,
        "client_cpu": 0.4,
        "foreign_cpu": 0.0,
        "problems": [],
    }


def result(rates: list[dict[str, Any]], per_pid: dict[str, int]) -> dict[str, Any]:
    return {
        "members": sum(per_pid.values()),
        "per_pid": per_pid,
        "workers": [int(pid) for pid in per_pid],
        "open_seconds": 1.5,
        "rates": rates,
        "problems": [],
    }


def test_ready_lines_are_found_even_when_two_workers_wrote_at_once() -> None:
    line = "fanout-worker-ready pid=12617fanout-worker-ready pid=12616\n"
    assert [int(pid) for pid in WORKER_LINE.findall(line)] == [12617, 12616]
    assert WORKER_LINE.findall("gunicorn (takeover, 4 workers) listening on 127.0.0.1:5000\n") == []


def test_the_driver_budget_covers_every_rate() -> None:
    params = fanout_params(quick=False, duration=3.0, warmup=0.5)
    assert params["clients"] == 4000
    per_rate = params["warmup"] + params["duration"] + params["drain"]
    assert params["budget"] > 2 * params["timeout"] + len(params["rates"]) * per_rate


def test_rounds_are_summarised_as_medians_and_lost_messages_summed() -> None:
    rounds = [
        result([rate(25, 100_000, 20.0), rate(100, 350_000, 300.0, lost=7)], {"11": 990, "12": 1010}),
        result([rate(25, 99_000, 30.0), rate(100, 360_000, 200.0)], {"11": 1001, "12": 999}),
        result([rate(25, 98_000, 10.0), rate(100, 340_000, 250.0, lost=3)], {"11": 1000, "12": 1000}),
    ]
    summary = summarise(rounds, [], "")
    assert summary["status"] == "ok"
    top = summary["rates"]["100"]
    assert top["deliveries_per_second"] == 350_000
    assert top["p99_ms"] == 250.0
    assert top["lost"] == 10
    assert top["expected"] == 3 * 300 * 4000
    assert top["target_deliveries_per_second"] == 100 * 2000
    assert summary["per_worker"] == [[990, 1010], [1001, 999], [1000, 1000]]
    assert summarise([], [], "redis-server is not installed")["status"] == "skipped"
    assert summarise([], ["round 1: boom"], "") == {"status": "error", "errors": ["round 1: boom"]}


def test_problems_of_a_rate() -> None:
    assert rate_problems(rate(25, 100_000, 20.0)) == []
    late = dict(rate(100, 300_000, 900.0, lost=12), publish_rate=80.0)
    assert rate_problems(late) == [
        "12 of 1,200,000 messages lost",
        "the publisher reached 80 of 100 publishes/s",
    ]


def summary_of(values: dict[str, list[tuple[float, float, float]]]) -> dict[str, Any]:
    return {
        key: summarise([result([rate(r, dps, p99) for r, dps, p99 in rows], {"1": 4000})], [], "")
        for key, rows in values.items()
    }


def test_targets_compare_deliveries_and_p99_at_each_rate() -> None:
    summary = summary_of(
        {
            "hub-redis": [(25, 100_000, 20.0), (100, 360_000, 300.0)],
            "hub-memory": [(25, 100_000, 20.0), (100, 320_000, 600.0)],
            "flask-socketio": [(25, 30_000, 400.0), (100, 170_000, 3000.0)],
        }
    )
    fsio, memory = evaluate_fanout_targets(summary, [25, 100])
    assert fsio["rates"]["25"]["ratio"] == pytest.approx(100 / 30)
    assert fsio["rates"]["25"]["pass"] is True  # 3.33x, p99 20 <= 400 ms
    assert fsio["rates"]["100"]["pass"] is False  # 2.12x
    assert memory["rates"]["100"]["ratio"] == pytest.approx(360 / 320)
    assert memory["rates"]["100"]["pass"] is True
    # 3x, but a worse p99: FAIL
    worse = summary_of({"hub-redis": [(25, 90_000, 500.0)], "flask-socketio": [(25, 30_000, 400.0)]})
    assert evaluate_fanout_targets(worse, [25])[0]["rates"]["25"]["pass"] is False
    # a row that did not run: not measured
    assert evaluate_fanout_targets({}, [25])[0]["rates"]["25"] == {"ratio": None, "pass": None}


def test_the_table_has_a_line_per_row_and_rate_and_the_targets() -> None:
    summary = summary_of(
        {
            "hub-redis": [(25, 100_000, 20.0), (100, 360_000, 300.0)],
            "hub-memory": [(25, 100_000, 20.0), (100, 320_000, 600.0)],
            "flask-socketio": [(25, 30_000, 400.0), (100, 170_000, 3000.0)],
        }
    )
    fanout = {
        "params": {"rates": [25, 100], "drain": 10.0},
        "description": "4,000 clients",
        "rows": [spec.key for spec in FANOUT_SERVERS],
        "labels": {spec.key: spec.label for spec in FANOUT_SERVERS},
        "summary": summary,
        "targets": evaluate_fanout_targets(summary, [25, 100]),
    }
    table = fanout_markdown(fanout)
    label = {spec.key: spec.label for spec in FANOUT_SERVERS}
    # µs/delivery: the server's share of a core (0.5 in summary_of's rounds) / deliveries per second.
    assert f"| {label['hub-redis']} | 100 | 360,000 (400,000) | 1.39 | 150 | 300 | 0 of 1,200,000 |" in table
    assert f"| {label['flask-socketio']} | 100 | 170,000 (400,000) | 2.94 | 1,500 | 3,000 |" in table
    assert f"| {label['hub-cluster']} | - | not run |" in table
    assert f"- {label['hub-redis']}: 4,000 (all connected and joined in 1.5 s)" in table
    assert "| PASS (3.33x; p99 20.0 vs 400 ms) | FAIL (2.12x; p99 300 vs 3,000 ms) |" in table


def test_a_need_may_be_a_name_in_a_module_or_a_node_package() -> None:
    (spec,) = [spec for spec in FANOUT_SERVERS if spec.key == "hub-memory"]
    assert check_available(dataclasses.replace(spec, needs=["json:loads"])) == ""
    assert "failed" in check_available(dataclasses.replace(spec, needs=["json:no_such_name"]))
    missing = check_available(dataclasses.replace(spec, needs=["node:no-such-package"]))
    assert "bench/node/node_modules/no-such-package is missing" in missing
