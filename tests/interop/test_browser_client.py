"""takeover.js in Chromium (issue 20): a page that reconnects and resumes, losing and doubling nothing.

A real redis-server, ``takeover serve`` running tests/interop/apps/client_app.py
on it, headless Chromium, and another page that keeps publishing numbered
messages to the first page's room (``POST /publish``, each after the one before,
again while the server is away). The server is restarted, and separately the
page's connection is cut through a TCP proxy (new connections refused for a
while); every message shows up in the page once, in order.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from takeover import publish
from tests.hub.proxy import CuttingProxy
from tests.interop.browser import WAIT_MS
from tests.paths import ROOT
from tests.processes import OutputLines, free_port, stop_process
from tests.redis_server import RedisServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

HOST = "127.0.0.1"
COUNT = 120


def start_app(port: int, hub_url: str) -> subprocess.Popen[bytes]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, TAKEOVER_HUB=hub_url, PYTHONPATH=path, PYTHONUNBUFFERED="1")
    app = "tests.interop.apps.client_app:app"
    command = [sys.executable, "-m", "takeover", "serve", app, "--bind", f"{HOST}:{port}"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if OutputLines(process.stdout).wait_for("takeover serving", 30) is None:
        stop_process(process, 15)
        raise RuntimeError("the app did not start")
    return process


class Publisher:
    """Another page of the same app that publishes m0, m1, ... ``COUNT`` messages to ``room``."""

    def __init__(self, context: BrowserContext, port: int, room: str) -> None:
        self.page = context.new_page()
        self.page.goto(f"http://{HOST}:{port}/publisher?room={room}&count={COUNT}", timeout=WAIT_MS)

    def close(self) -> None:
        self.page.close()


def received(page: Page) -> list[str]:
    seen: list[list[Any]] = page.evaluate("window.seen")
    return [data for _, data in seen]


def wait_for(page: Page, expression: str) -> None:
    page.wait_for_function(expression, timeout=WAIT_MS * 3)


def assert_all_once_in_order(page: Page) -> None:
    wait_for(page, f"window.seen.length >= {COUNT}")
    assert received(page) == [f"m{n}" for n in range(COUNT)]
    offsets = [offset for offset, _ in page.evaluate("window.seen")]
    assert offsets == list(range(offsets[0], offsets[0] + COUNT)), "offsets one apart"
    assert page.evaluate("window.resyncs") == []


def test_a_server_restart_is_resumed_with_since(browser: Browser, redis_server: RedisServer) -> None:
    port = free_port()
    app = start_app(port, redis_server.url)
    context = browser.new_context()
    publisher = None
    try:
        page = context.new_page()
        page.goto(f"http://{HOST}:{port}/?room=restart", timeout=WAIT_MS)
        wait_for(page, "window.opens === 1")
        publisher = Publisher(context, port, "restart")
        wait_for(page, "window.seen.length >= 20")
        stop_process(app, 15)  # the page's connection closes; it reconnects with backoff
        app = start_app(port, redis_server.url)
        assert_all_once_in_order(page)
        assert publisher.page.evaluate("window.retries") > 0  # it published across the restart
        assert page.evaluate("window.opens") >= 2
        assert page.evaluate("window.socket.connects") >= 2
    finally:
        if publisher is not None:
            publisher.close()
        context.close()
        stop_process(app, 15)


def test_a_cut_connection_is_resumed_with_since(browser: Browser, redis_server: RedisServer) -> None:
    port = free_port()
    app = start_app(port, redis_server.url)
    proxy = CuttingProxy(port)
    context = browser.new_context()
    publisher = None
    try:
        page = context.new_page()
        ws_url = f"ws://{HOST}:{proxy.port}/ws?room=cut"
        page.goto(f"http://{HOST}:{port}/?ws={ws_url}", timeout=WAIT_MS)
        wait_for(page, "window.opens === 1")
        publisher = Publisher(context, port, "cut")
        for round_ in range(3):
            wait_for(page, f"window.seen.length >= {20 * (round_ + 1)}")
            proxy.cut()  # the connection drops; new ones are refused...
            wait_for(page, f"window.socket.connects >= {round_ + 2}")  # ...while the page tries again
            proxy.refusing.clear()
            wait_for(page, f"window.opens >= {round_ + 2}")
        assert_all_once_in_order(page)
    finally:
        if publisher is not None:
            publisher.close()
        context.close()
        proxy.close()
        stop_process(app, 15)


def test_a_since_no_longer_retained_is_a_resync(browser: Browser, redis_server: RedisServer) -> None:
    """The first connect resumes after the first offset of a room that trimmed it: "not-resumed".

    (Redis trims a stream by whole nodes of 100 entries: 300 messages with ``history=5``.)
    """
    port = free_port()
    app = start_app(port, redis_server.url)
    context = browser.new_context()
    try:
        offsets = [publish(redis_server.url, "trimmed", f"old{n}", history=5).offset for n in range(300)]
        assert offsets == list(range(offsets[0], offsets[0] + 300))
        page = context.new_page()
        page.goto(f"http://{HOST}:{port}/?room=trimmed&since={offsets[0]}", timeout=WAIT_MS)
        wait_for(page, "window.opens === 1")
        live = publish(redis_server.url, "trimmed", "live", history=5).offset
        wait_for(page, "window.seen.length >= 1")
        assert page.evaluate("window.seen") == [[live, "live"]]  # nothing was replayed
        assert page.evaluate("window.resyncs") == [["not-resumed", offsets[1], offsets[-1]]]
        assert page.evaluate("window.socket.lastOffset") == live
    finally:
        context.close()
        stop_process(app, 15)


def test_a_gap_the_server_reports_is_a_resync(browser: Browser, redis_server: RedisServer) -> None:
    """Redis restarts empty: the server's hub finds the offsets it missed gone and says so in an
    envelope ``{"room", "gap"}``; the page gets a "gap" resync, then the next message."""
    port = free_port()
    app = start_app(port, redis_server.url)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"http://{HOST}:{port}/?room=gapped", timeout=WAIT_MS)
        wait_for(page, "window.opens === 1")
        # This test is about the gap, not the first message: publish until one arrives. (One CI run
        # lost the very first publish to a fresh app's room: a join whose subscription Redis had not
        # confirmed yet; fixed, and shown by tests/hub/test_faults.py's late-confirmation test.)
        for _ in range(50):
            first = publish(redis_server.url, "gapped", "before", history=1000).offset
            if page.evaluate("new Promise((done) => setTimeout(() => done(window.seen.length), 200))"):
                break
        assert first is not None
        page.evaluate("window.seen = window.seen.slice(-1)")
        assert received(page) == ["before"] and page.evaluate("window.seen[0][0]") == first
        redis_server.restart()  # empty: a new epoch, and what followed `first` is unknown
        for _ in range(200):  # the app's hub reconnects with backoff: publish until Redis takes it
            after = publish(redis_server.url, "gapped", "after", history=1000)
            if after.remote:
                break
        wait_for(page, "window.seen.length >= 2")
        assert received(page) == ["before", "after"]
        resyncs = page.evaluate("window.resyncs")
        assert resyncs and resyncs[0][0] == "gap" and resyncs[0][1] == first + 1, resyncs
        assert page.evaluate("window.opens") == 1  # told without reconnecting
    finally:
        context.close()
        stop_process(app, 15)


def test_sends_while_away_are_kept_up_to_max_buffered_then_refused(browser: Browser) -> None:
    """With no server, ``send()`` keeps 256 messages; the next are refused, each with "bufferfull"."""
    nobody, page_port = free_port(), free_port()
    context = browser.new_context()
    page_server = start_app(page_port, "memory://")  # serves the page; its WebSocket goes nowhere
    try:
        page = context.new_page()
        page.goto(f"http://{HOST}:{page_port}/?ws=ws://{HOST}:{nobody}/ws", timeout=WAIT_MS)
        counts = page.evaluate(
            """() => {
              window.full = 0;
              window.socket.addEventListener("bufferfull", () => { window.full += 1; });
              let refused = 0;
              for (let n = 0; n < 300; n += 1) if (!window.socket.send("m" + n)) refused += 1;
              return [refused, window.socket.bufferedCount, window.full, window.socket.readyState];
            }"""
        )
        assert counts == [44, 256, 44, 0]  # CONNECTING: it keeps trying
    finally:
        context.close()
        stop_process(page_server, 15)
