"""``python -m bench --scenarios redis`` (bench/capacity.py): one real round against a real redis-server.

The figures depend on the machine; what is checked is that they are measured
(a CPU time per publish that a real Redis spends, a memory per subscription
that a real Redis takes) and reported.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.paths import ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.capacity import measure_redis, redis_markdown, run_redis


def test_one_round_measures_redis_cpu_per_publish_and_memory_per_subscription(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    with open(tmp_path / "redis.log", "w") as log:
        result = measure_redis(log)
    assert 1.0 < result["publish_cpu_us"] < 1000.0, result  # a script, a stream entry, a PUBLISH
    assert 50 < result["bytes_per_subscription"] < 5000, result


def test_the_report_gives_the_medians_and_publishes_per_core(tmp_path: Path) -> None:
    capacity = run_redis(1, tmp_path)
    table = redis_markdown(capacity)
    assert capacity["publishes_per_core"] == pytest.approx(1e6 / capacity["publish_cpu_us"])
    assert f"| Redis CPU per publish | {capacity['publish_cpu_us']:.1f} µs |" in table
    assert "bytes |" in table
