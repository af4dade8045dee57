"""The bench's threaded-server rows (issue 19) and its CPU pinning, without a run.

The "threaded servers" table (bench/report.py): issue 19's ratios, each of two
medians of one run, "met" or "missed"; the ``--pin/--no-pin`` choice
(bench/run.py); the check that a pinned server's processes and threads, gunicorn's
worker among them, stayed on the CPU asked for (bench/measure.py); and the
Flask-Sock app's two rows, which differ only by the ``Sock`` they import.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.paths import ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.loadgen import ServerProcess
from bench.measure import pinning_problems
from bench.proc import affinity
from bench.report import THREADED, evaluate_threaded, threaded_markdown
from bench.run import choose_pinning
from bench.specs import SERVERS

SPEC = {spec.key: spec for spec in SERVERS}


def summary_of(medians: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    return {
        key: {scenario: {"status": "ok", "median": value} for scenario, value in cells.items()}
        for key, cells in medians.items()
    }


def test_every_threaded_ratio_names_rows_of_the_bench() -> None:
    for scenario, mine, theirs, _, _ in THREADED:
        assert mine in SPEC and theirs in SPEC
        assert scenario in ("small", "large", "handshake")


def test_threaded_ratios_are_medians_of_the_same_run_against_the_issues_targets() -> None:
    summary = summary_of(
        {
            "gunicorn-gthread": {"small": 45_000.0, "large": 900.0, "handshake": 1_800.0},
            "flask-sock-gthread": {"small": 20_000.0, "large": 170.0, "handshake": 1_300.0},
            "takeover-flask-sock-gthread": {"small": 30_000.0, "large": 850.0},
            "gunicorn-takeover": {"small": 90_000.0, "large": 1_400.0, "handshake": 2_800.0},
        }
    )
    rows = {(row["scenario"], row["server"], row["peer"]): row for row in evaluate_threaded(summary)}
    echo = rows[("small", "gunicorn-gthread", "flask-sock-gthread")]
    assert echo["ratio"] == pytest.approx(2.25)
    assert (echo["minimum"], echo["met"]) == (2.0, True)
    gevent = rows[("small", "gunicorn-gthread", "gunicorn-takeover")]
    assert gevent["ratio"] == pytest.approx(0.5)
    assert (gevent["minimum"], gevent["met"]) == (0.6, False)
    drop_in = rows[("small", "takeover-flask-sock-gthread", "flask-sock-gthread")]
    assert (drop_in["ratio"], drop_in["met"]) == (pytest.approx(1.5), False)
    handshakes = rows[("handshake", "gunicorn-gthread", "flask-sock-gthread")]
    assert (handshakes["ratio"], handshakes["minimum"], handshakes["met"]) == (
        pytest.approx(1800 / 1300),
        1.5,
        False,
    )
    large = rows[("large", "gunicorn-gthread", "flask-sock-gthread")]
    assert (large["ratio"], large["minimum"], large["met"]) == (pytest.approx(900 / 170), None, None)

    table = threaded_markdown({"threaded": list(rows.values())})
    assert (
        "| 32 B echo: takeover handed over (gthread) / Flask-Sock (gthread) | 45,000 / 20,000 msgs/s "
        "| 2.25x | >= 2x | met |"
    ) in table
    assert (
        "| 32 B echo: takeover handed over (gthread) / takeover's gevent worker | 45,000 / 90,000 msgs/s "
        "| 0.50x | >= 0.6x | missed |"
    ) in table
    assert "| 1,800 / 1,300 /s | 1.38x | >= 1.5x | missed |" in table
    assert "| 900 / 170 MB/s | 5.29x | (shown) | - |" in table


def test_a_row_that_did_not_run_is_not_measured_and_no_row_means_no_table() -> None:
    rows = evaluate_threaded(summary_of({"flask-sock-gthread": {"small": 20_000.0}}))
    first = rows[0]
    assert (first["server_median"], first["peer_median"], first["ratio"], first["met"]) == (
        None,
        20_000.0,
        None,
        None,
    )
    assert "| - / 20,000 msgs/s | - | >= 2x | not measured |" in threaded_markdown({"threaded": rows})
    assert evaluate_threaded(summary_of({"takeover": {"small": 1.0}})) == []
    assert threaded_markdown({"threaded": []}) == ""


def test_pinning_is_on_by_default_with_two_cpus() -> None:
    assert choose_pinning(None, [2, 5, 7]) == (
        {"server": {2}, "client": {5}},
        "server on CPU 2, load generator on CPU 5",
    )
    assert choose_pinning(True, [0, 1])[0] == {"server": {0}, "client": {1}}
    assert choose_pinning(False, [0, 1]) == ({"server": None, "client": None}, "none (--no-pin)")
    assert choose_pinning(None, [0]) == ({"server": None, "client": None}, "none (only 1 CPU available)")
    assert choose_pinning(True, [0])[0] == {"server": None, "client": None}


def test_a_thread_outside_the_pinned_cpu_is_a_problem() -> None:
    pin: dict[str, set[int] | None] = {"server": {0}, "client": {1}}
    assert pinning_problems({"server": {"0": [10, 11, 12]}, "client": {"1": [20]}}, pin) == []
    assert pinning_problems({"server": {"0": [10], "0,1": [11, 12]}, "client": {"1": [20]}}, pin) == [
        "server not pinned to CPU 0: 2 thread(s) allowed CPUs 0,1"
    ]
    assert pinning_problems({"server": {"0,1": [10]}}, {"server": None, "client": None}) == []


@pytest.fixture
def log(tmp_path: Path) -> Any:
    path = tmp_path / "server.log"
    with open(path, "w") as file:
        yield file
    print(path.read_text())


@pytest.mark.parametrize(
    ("key", "module"),
    [("flask-sock-gthread", "flask_sock"), ("takeover-flask-sock-gthread", "takeover.flask_sock")],
)
def test_the_flask_sock_rows_differ_by_their_import_and_run_pinned(key: str, module: str, log: Any) -> None:
    pytest.importorskip("flask")
    pytest.importorskip("gunicorn")
    if key == "flask-sock-gthread":
        pytest.importorskip("flask_sock")
    cpu = min(os.sched_getaffinity(0))
    server = ServerProcess(SPEC[key], "small", {cpu}, log)
    try:
        server.wait_ready()
        assert "gthread, 64 threads" in server.ready_line
        assert f"Sock from {module})" in server.ready_line
        assert str(ROOT / "bench" / "servers" / "flasksock_threaded.py") in server.ready_line
        # The arbiter and its worker, every thread: on the one CPU.
        sets = affinity(server.process.pid)
        assert list(sets) == [str(cpu)]
        assert len(sets[str(cpu)]) >= 2
    finally:
        server.stop()
