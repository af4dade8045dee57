"""Fixtures of the interop tests: headless Chromium (Playwright) for the browser tests, Node's ``ws`` for
the bench drivers."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.hub.conftest import redis_server as redis_server  # a redis-server per module, as the hub tests'
from tests.interop.browser import CHROMIUM, CHROMIUM_ARGS, WAIT_MS
from tests.paths import ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture
def node_ws(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench's Node drivers need ``ws``: bench/node's if ``make bench`` installed it, else the tests'."""
    if shutil.which("node") is None:
        pytest.fail("node is not installed (.ci/run installs nodejs)")
    if not (ROOT / "bench" / "node" / "node_modules" / "ws").is_dir():
        tests_ws = ROOT / "tests" / "node" / "node_modules"
        assert (tests_ws / "ws").is_dir(), "tests/node/node_modules/ws is missing (make test installs it)"
        paths = [str(tests_ws), os.environ.get("NODE_PATH")]
        monkeypatch.setenv("NODE_PATH", os.pathsep.join(filter(None, paths)))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if os.environ.get("TAKEOVER_SKIP_BROWSER") == "1":
        pytest.skip("TAKEOVER_SKIP_BROWSER=1")
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: apt-get install chromium (or set TAKEOVER_SKIP_BROWSER=1 to skip)",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        pytest.fail(
            f"the playwright package is missing ({error}): pip install -e '.[test]' "
            "(or set TAKEOVER_SKIP_BROWSER=1 to skip)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, timeout=WAIT_MS * 3
        )
        try:
            yield chromium
        finally:
            chromium.close()
