"""permessage-deflate with a real browser: headless Chromium (Playwright) against
``examples/echo.py --compression deflate``.

Chromium offers ``permessage-deflate; client_max_window_bits`` on every
WebSocket; a small page, served from 127.0.0.1 (Chromium's local network
access checks refuse loopback WebSockets from other origins), checks what was
negotiated (``ws.extensions``) and that text and binary messages, small and
large, come back as they were sent. Like tests/interop/test_browser_chat.py it uses
Debian's ``/usr/bin/chromium`` and fails without it unless
``TAKEOVER_SKIP_BROWSER=1``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.interop.browser import evaluate_in_page, serve_page
from tests.paths import EXAMPLES
from tests.processes import ServerProcess, start_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser


# Runs in the page: open the WebSocket, echo each message, report what came back.
ECHO_SCRIPT = """
async (url) => {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error("error"));
  });
  const inbox = [];
  let waiting = null;
  ws.onmessage = (event) => { inbox.push(event.data); if (waiting) { waiting(); waiting = null; } };
  const next = () => inbox.length ? Promise.resolve(inbox.shift())
                                  : new Promise((resolve) => { waiting = () => resolve(inbox.shift()); });
  const digest = async (data) => {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : new Uint8Array(data);
    const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    return Array.from(hash, (b) => b.toString(16).padStart(2, "0")).join("");
  };
  const random = new Uint8Array(200000);
  for (let i = 0; i < random.length; i += 65536) crypto.getRandomValues(random.subarray(i, i + 65536));
  const messages = [
    "hello",
    "grüße ".repeat(100000),
    JSON.stringify({items: Array.from({length: 2000}, (_, i) => ({id: i, name: "item " + i}))}),
    random.buffer,
    new Uint8Array(1000000).buffer,
    "",
  ];
  const results = [];
  for (const message of messages) {
    ws.send(message);
    const echo = await next();
    results.push({
      sameType: typeof echo === typeof message,
      same: (await digest(echo)) === (await digest(message)),
    });
  }
  const extensions = ws.extensions;
  ws.close(1000);
  await new Promise((resolve) => { ws.onclose = resolve; });
  return {extensions, results};
}
"""


PAGE = b"<!doctype html><title>deflate echo</title><p>takeover permessage-deflate test page</p>"


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    """A page on 127.0.0.1, so that its WebSockets to 127.0.0.1 are allowed."""
    httpd, origin = serve_page(PAGE)
    yield origin + "/"
    httpd.shutdown()
    httpd.server_close()


def echo_in_page(browser: Browser, page_url: str, url: str) -> dict[str, Any]:
    result: dict[str, Any] = evaluate_in_page(browser, page_url, ECHO_SCRIPT, url)
    return result


@pytest.fixture(scope="module")
def deflate_server() -> Iterator[ServerProcess]:
    server = start_server(EXAMPLES / "echo.py", "--idle-timeout", "0", "--compression", "deflate")
    yield server
    server.stop()


def test_chromium_negotiates_deflate_and_echoes(
    browser: Browser, page_url: str, deflate_server: ServerProcess
) -> None:
    result = echo_in_page(browser, page_url, deflate_server.url)
    assert result["extensions"] == "permessage-deflate"
    assert result["results"] == [{"sameType": True, "same": True}] * 6


def test_chromium_without_server_compression(
    browser: Browser, page_url: str, echo_server: ServerProcess
) -> None:
    result = echo_in_page(browser, page_url, echo_server.url)
    assert result["extensions"] == ""
    assert result["results"] == [{"sameType": True, "same": True}] * 6
