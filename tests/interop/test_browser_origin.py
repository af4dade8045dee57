"""Cross-site WebSocket hijacking, with a real browser: headless Chromium sends
``Origin``, and ``takeover serve --allowed-origin`` refuses pages of other origins.

Two pages on 127.0.0.1 are two origins (the port is part of an origin): the
app's own page and another site's. Both run the same script, which opens a
WebSocket to ``examples/flask_echo.py`` served by ``takeover serve``. The own
page gets its echo; the other site's page gets the browser's ``error`` and a
``close`` with 1006, because the handshake was answered 403 (the server's
access log's "WebSocket refused" line shows it). Uses Debian's ``/usr/bin/chromium`` like
tests/interop/test_browser_chat.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.interop.browser import evaluate_in_page, serve_page
from tests.paths import ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Browser


# Runs in the page: open the WebSocket, send one message, report what happened.
TRY_SCRIPT = """
async (url) => {
  const events = [];
  const ws = new WebSocket(url);
  return await new Promise((resolve) => {
    ws.onopen = () => { events.push("open"); ws.send("hello from the page"); };
    ws.onmessage = (event) => { events.push("message:" + event.data); ws.close(1000); };
    ws.onerror = () => events.push("error");
    ws.onclose = (event) => resolve({events, code: event.code, wasClean: event.wasClean});
  });
}
"""

PAGE = b"<!doctype html><title>a page</title><p>a page on its own origin</p>"
BANNER = re.compile(r"ws://127\.0\.0\.1:(\d+)/")


@pytest.fixture(scope="module")
def origins() -> Iterator[tuple[str, str]]:
    """The app's own origin and another site's, each serving a page."""
    own, own_origin = serve_page(PAGE)
    other, other_origin = serve_page(PAGE)
    yield own_origin, other_origin
    for httpd in (own, other):
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def app(origins: tuple[str, str]) -> Iterator[tuple[str, list[str]]]:
    """``takeover serve`` allowing only the own origin: its ws:// URL, and its output lines."""
    process = subprocess.Popen(
        [sys.executable, "-m", "takeover", "serve", "examples.flask_echo:app",
         "--bind", "127.0.0.1:0", "--allowed-origin", origins[0]],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert process.stdout is not None
    output: list[str] = []
    port = None
    deadline = time.monotonic() + 20
    while port is None and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        match = BANNER.search(line)
        if match:
            port = int(match.group(1))
    if port is None:
        process.kill()
        pytest.fail(f"takeover serve did not start: {''.join(output)}")
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    yield f"ws://127.0.0.1:{port}/ws", output
    process.terminate()
    process.wait(10)
    reader.join(5)


def try_in_page(browser: Browser, page_url: str, ws_url: str) -> dict[str, Any]:
    result: dict[str, Any] = evaluate_in_page(browser, page_url, TRY_SCRIPT, ws_url)
    return result


def test_the_apps_own_page_connects(
    browser: Browser, origins: tuple[str, str], app: tuple[str, list[str]]
) -> None:
    result = try_in_page(browser, origins[0] + "/", app[0])
    assert result == {
        "events": ["open", "message:hello from the page"], "code": 1000, "wasClean": True,
    }


def test_another_sites_page_is_refused_with_403(
    browser: Browser, origins: tuple[str, str], app: tuple[str, list[str]]
) -> None:
    ws_url, output = app
    result = try_in_page(browser, origins[1] + "/", ws_url)
    # What the DOM reports for a failed handshake (the status is not exposed to the page).
    assert result == {"events": ["error"], "code": 1006, "wasClean": False}
    refusal = "WebSocket refused /ws peer=127.0.0.1:"
    for _ in range(100):  # the access log line is written as the answer goes out
        if any(refusal in line for line in output):
            break
        time.sleep(0.05)
    lines = [line for line in output if refusal in line]
    assert len(lines) == 1, "".join(output)
    assert f"status=403: Origin '{origins[1]}' is not allowed" in lines[0]
