"""``python -m bench --scenarios drops`` (bench/drops.py, bench/node/drops.js).

One real round, short, on the gthread row: a redis-server, the hub app on gunicorn
``-k gthread -w 2``, and the Node driver with its cutting proxy. Every member must
get every message once and in order across the cuts, which it can only do by
resuming with ``since``. Then the summary over rounds and the table, from made-up
driver results.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.paths import ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.drops import drops_markdown, drops_params, measure_drops, summarise
from bench.specs import DROPS_SERVERS

SPECS = {spec.key: spec for spec in DROPS_SERVERS}


def test_a_round_on_gthread_delivers_everything_once_in_order_across_the_cuts(
    node_ws: None, tmp_path: Path
) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    params = dict(drops_params(quick=True), clients=10, duration=5, cutEvery=1.5, refuseFor=0.5, drain=10)
    with open(tmp_path / "drops.log", "w") as log:  # the processes' output goes to a real file
        result = measure_drops(SPECS["drops-hub-gthread"], params, log)
    output = (tmp_path / "drops.log").read_text()
    assert result["published"] == 200 and result["members"] == 10, output
    assert result["cuts"] == 3, output
    # Every member was cut three times and came back each time, some attempts refused first.
    assert result["reconnects"] >= 3 * 10 and result["refused"] > 0
    assert (result["delivered"], result["duplicates"], result["reordered"]) == (200 * 10, 0, 0)
    assert result["complete_members"] == 10 and result["gaps"] == 0 and result["not_resumed"] == 0


def driver_result(delivered: int, duplicates: int = 0, members: int = 60) -> dict[str, Any]:
    return {
        "members": members,
        "published": 800,
        "expected": 800 * members,
        "delivered": delivered,
        "duplicates": duplicates,
        "reordered": 0,
        "reconnects": 4 * members,
        "gaps": 0,
        "cuts": 4,
        "complete_members": members if delivered == 800 * members else 0,
    }


def test_rounds_are_summed_and_delivery_is_a_fraction_of_all_of_them() -> None:
    cell = summarise([driver_result(48_000), driver_result(24_000, duplicates=3)], [], "")
    assert cell["status"] == "ok" and cell["rounds"] == 2
    assert (cell["expected"], cell["delivered"], cell["duplicates"]) == (96_000, 72_000, 3)
    assert cell["delivery"] == 0.75 and cell["complete_members"] == 60
    assert summarise([], ["round 1: boom"], "")["status"] == "error"
    assert summarise([], [], "redis-server is not installed")["status"] == "skipped"


def test_the_table_has_a_line_per_row() -> None:
    keys = [spec.key for spec in DROPS_SERVERS]
    drops = {
        "description": "the scenario",
        "rows": keys,
        "labels": {spec.key: spec.label for spec in DROPS_SERVERS},
        "notes": {spec.key: spec.notes for spec in DROPS_SERVERS},
        "summary": {
            keys[0]: summarise([driver_result(48_000)], [], ""),
            keys[1]: summarise([], ["round 1: the driver gave up"], ""),
            keys[2]: summarise([driver_result(40_704)], [], ""),
        },
    }
    table = drops_markdown(drops)
    assert "| 100.00% (48,000 of 48,000) | 0 | 0 | 240 | 0 | 0 | 1 |" in table
    assert "| 84.80% (40,704 of 48,000) |" in table
    assert "error: round 1: the driver gave up" in table
