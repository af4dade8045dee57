"""The multiprocess exporter on its own: a directory it cannot write to is said once, never fatal."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from takeover.metrics._processes import Exporter


def test_an_unwritable_directory_is_one_warning_and_the_copying_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="takeover")
    attempts = threading.Semaphore(0)
    exporter = Exporter(str(tmp_path / "missing"), interval=0.01)
    sync = exporter.sync

    def counted() -> dict[str, object]:
        attempts.release()
        return sync()

    exporter.sync = counted  # type: ignore[method-assign]
    exporter.ensure_running()
    try:
        for _ in range(5):  # five failed copies, each waited for
            assert attempts.acquire(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not caplog.records:
            time.sleep(0.01)  # the thread logs right after its failed attempt
    finally:
        exporter._stop.set()
    warnings = [record for record in caplog.records if "PROMETHEUS_MULTIPROC_DIR" in record.getMessage()]
    assert len(warnings) == 1, [record.getMessage() for record in caplog.records]
    assert str(tmp_path / "missing") in warnings[0].getMessage()
