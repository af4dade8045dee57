"""``python -m bench --baseline REV``'s parts that need no long run (bench/baseline.py).

The baseline is a temporary ``git worktree`` of REV with the C speedups, and
its rows start the takeover servers from there, with the worktree first on
PYTHONPATH; every takeover server says which ``takeover`` it imported before
its ready line, and the harness refuses one that imported the wrong one. Here
REV is HEAD: what matters is where the code is imported from, not what it is.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.baseline import Baseline, interleave
from bench.loadgen import ServerProcess
from bench.measure import measure
from bench.report import before_after, before_after_markdown
from bench.specs import SCENARIO_BY_KEY, SERVERS

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs git and a git checkout"
)

SPEC = {spec.key: spec for spec in SERVERS}
BUILT = sorted((ROOT / "takeover" / "protocol").glob("_speedups.*.so"))


def worktrees() -> list[Path]:
    listing = subprocess.run(
        ["git", "worktree", "list", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    lines = listing.splitlines()
    return [Path(line.split(" ", 1)[1]).resolve() for line in lines if line.startswith("worktree ")]


@pytest.fixture(scope="module")
def baseline() -> object:
    with Baseline("HEAD") as made:
        yield made


@pytest.fixture
def log(tmp_path: Path) -> object:
    """The servers' output (the harness writes it to bench/results/logs/), shown on failure."""
    path = tmp_path / "server.log"
    with open(path, "w") as file:
        yield file
    print(path.read_text())


def start(spec: object, log: object, scenario: str = "small") -> ServerProcess:
    server = ServerProcess(spec, scenario, None, log)  # type: ignore[arg-type]
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_the_worktree_is_made_at_rev_and_removed() -> None:
    made = Baseline("HEAD")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    assert made.commit == head.strip()
    path = made.create()
    try:
        assert path.resolve() in worktrees()
        assert not path.resolve().is_relative_to(ROOT)  # outside the checkout being measured
        checked_out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True
        ).stdout
        assert checked_out.strip() == made.commit
        assert (path / "takeover" / "__init__.py").is_file()
        if BUILT:  # the C extension is there, copied or built
            assert list((path / "takeover" / "protocol").glob("_speedups.*.so")), made.speedups
    finally:
        made.remove()
    assert not path.exists()
    assert path.resolve() not in worktrees()
    made.remove()  # twice is harmless


def test_same_code_says_whether_takeover_differs_at_rev() -> None:
    dirty = subprocess.run(
        ["git", "diff", "--name-only", "HEAD", "--", "takeover", "examples"],
        cwd=ROOT, capture_output=True, text=True,
    ).stdout.strip()
    assert Baseline("HEAD").same_code is not bool(dirty)


def test_an_unknown_rev_is_refused_before_anything_is_made() -> None:
    with pytest.raises(RuntimeError, match="rev-parse"):
        Baseline("no-such-revision-of-takeover")


def test_baseline_rows_are_twins_of_the_takeover_rows(baseline: Baseline) -> None:
    chosen = [SPEC["takeover"], SPEC["takeover-inapp"], SPEC["gunicorn-gthread"], SPEC["gevent-websocket"]]
    twins = baseline.servers(chosen)
    assert [twin.key for twin in twins] == [
        f"takeover@{baseline.short}", f"takeover-inapp@{baseline.short}", f"gunicorn-gthread@{baseline.short}"
    ]
    assert [spec.key for spec in interleave(chosen, twins)] == [
        "takeover", f"takeover@{baseline.short}", "takeover-inapp", f"takeover-inapp@{baseline.short}",
        "gunicorn-gthread", f"gunicorn-gthread@{baseline.short}", "gevent-websocket",
    ]
    for twin in twins:
        assert twin.cwd == twin.takeover_root == baseline.path
    assert SPEC["takeover"].takeover_root == ROOT  # the current rows are not changed
    assert baseline.servers([SPEC["gevent-websocket"]]) == []


@pytest.mark.parametrize("key", ["takeover", "takeover-inapp", "gunicorn-gthread"])
def test_a_baseline_server_imports_the_worktree(baseline: Baseline, key: str, log: object) -> None:
    if key != "takeover":
        pytest.importorskip("flask")
    if key == "gunicorn-gthread":
        pytest.importorskip("gunicorn")
    assert baseline.path is not None
    (twin,) = [t for t in baseline.servers() if t.baseline_of == key]
    server = start(twin, log)
    try:
        assert Path(server.imports["takeover"]) == baseline.path / "takeover" / "__init__.py"
        if BUILT:
            assert Path(server.imports["speedups"]).parent == baseline.path / "takeover" / "protocol"
        pid = server.process.pid
        assert Path(os.readlink(f"/proc/{pid}/cwd")) == baseline.path.resolve()
        assert environ_of(pid)["PYTHONPATH"].split(os.pathsep)[0] == str(baseline.path)
        if key == "gunicorn-gthread":
            # This checkout's runner (the same gunicorn settings), the worktree's app.
            assert twin.echo(1)[1] == str(ROOT / "bench" / "servers" / "gunicorn_echo.py")
            assert f"(app {baseline.path / 'examples' / 'flask_echo.py'})" in server.ready_line
    finally:
        server.stop()


def test_a_current_row_imports_this_checkout(log: object) -> None:
    server = start(SPEC["takeover"], log)
    try:
        assert Path(server.imports["takeover"]) == ROOT / "takeover" / "__init__.py"
    finally:
        server.stop()


def test_a_server_that_imports_another_takeover_is_refused(tmp_path: Path, log: object) -> None:
    # The check can fail: the same server, expected to import from elsewhere.
    wrong = dataclasses.replace(SPEC["takeover"], takeover_root=tmp_path)
    with pytest.raises(RuntimeError, match="imported takeover from"):
        start(wrong, log)


@pytest.mark.skipif(
    shutil.which("node") is None or not (ROOT / "bench" / "node" / "node_modules" / "ws").is_dir(),
    reason="needs Node.js and bench/node's ws (make bench/node/node_modules/.installed)",
)
def test_one_short_handshake_measurement_of_the_baseline(baseline: Baseline, log: object) -> None:
    (twin,) = [t for t in baseline.servers() if t.baseline_of == "takeover"]
    scenario = SCENARIO_BY_KEY["handshake"]
    params = dict(scenario.params(True), duration=0.3, warmup=0.1, timeout=20, client="lean")
    result = measure(twin, scenario, params, {"server": None, "client": None}, log, 0.1)
    assert result["value"] > 0
    assert not result.get("problems")
    assert Path(result["imports"]["takeover"]).parent == baseline.path / "takeover"  # type: ignore[operator]


def report(before: dict[str, list[float]], after: dict[str, list[float]]) -> dict[str, object]:
    def cells(values: dict[str, list[float]]) -> dict[str, object]:
        return {
            key: {"status": "ok", "median": sorted(v)[len(v) // 2], "values": v} for key, v in values.items()
        }

    def details(values: dict[str, list[float]]) -> dict[str, object]:
        return {
            key: [{"round": i + 1, "value": x, "server_cpu": 1.0} for i, x in enumerate(v)]
            for key, v in values.items()
        }

    return {
        "config": {
            "scenarios": list(before),
            "baseline_of": {"takeover@abc1234": "takeover"},
            "server_labels": {"takeover": "takeover (socket mode)"},
        },
        "summary": {"takeover@abc1234": cells(before), "takeover": cells(after)},
        "details": {"takeover@abc1234": details(before), "takeover": details(after)},
        "machine": {"takeover_commit": "def5678", "takeover_uncommitted_changes": False},
        "baseline": {"short": "abc1234", "commit": "abc1234" + "0" * 33, "rev": "main", "same_code": False},
    }


def test_before_after_ratios_and_the_three_percent_rule() -> None:
    data = report(
        {"small": [100.0, 100.0, 100.0], "handshake": [100.0, 100.0, 100.0], "idle": [10.0, 10.0, 10.0]},
        {"small": [98.0, 96.0, 99.0], "handshake": [90.0, 95.0, 96.0], "idle": [10.2, 10.5, 10.1]},
    )
    rows = {row["scenario"]: row for row in before_after(data)}
    assert rows["small"]["ratio"] == pytest.approx(0.98)
    assert rows["small"]["within"] is True  # 2% slower: within 3%
    assert rows["small"]["round_ratios"] == pytest.approx([0.98, 0.96, 0.99])
    assert rows["handshake"]["within"] is False  # 5% slower
    assert rows["idle"]["ratio"] == pytest.approx(1.02)
    assert rows["idle"]["within"] is True  # lower is better: 2% more memory is within 3%
    data["before_after"] = list(rows.values())
    table = before_after_markdown(data)
    row = "| takeover (socket mode) | {} | 100 | {} | {} | {} | {} | {} |"
    assert row.format("32 B echo (msgs/s)", 98, "0.980x", "0.98, 0.96, 0.99", "yes", "0.980x") in table
    assert row.format("handshakes (/s)", 95, "0.950x", "0.90, 0.95, 0.96", "NO", "0.950x") in table
    assert "| idle RSS (KB/conn) | 10.0 | 10.2 | 1.020x | 1.02, 1.05, 1.01 | yes | - |" in table
