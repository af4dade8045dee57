"""Helpers of the Chromium tests: Debian's Chromium, a page on its own origin, a script run in a page."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 10_000  # any one step in the page


def serve_page(body: bytes) -> tuple[ThreadingHTTPServer, str]:
    """Serve ``body`` as an HTML page on 127.0.0.1 (a port of its own: an origin of its own).

    Returns the server (``shutdown()`` and ``server_close()`` it) and its origin.
    Chromium's local network access checks refuse loopback WebSockets from
    public pages, so the pages that open them are served from 127.0.0.1 too.
    """

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def evaluate_in_page(browser: Browser, page_url: str, script: str, argument: Any) -> Any:
    """Open ``page_url`` in a fresh context and return what ``script(argument)`` resolves to."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS * 3)
        page.goto(page_url, timeout=WAIT_MS)
        return page.evaluate(script, argument)
    finally:
        context.close()
