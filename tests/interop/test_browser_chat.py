"""examples/chat in a real browser: headless Chromium driven by Playwright.

Two pages (separate browser contexts) join under different names, see each
other online and typing, and exchange messages; then the server is stopped
with SIGTERM and a new one is started on the same port, and both pages must
reconnect by themselves (the badge back to "open"), join again and go on
chatting; what one of them sent while the server was away is sent once it is
back. The page reconnects with takeover's browser client (``takeover.js``).

It uses Debian's ``/usr/bin/chromium``; Playwright never downloads a browser.
Without that browser or the ``playwright`` package the test fails, so CI
cannot pass by skipping it, unless ``TAKEOVER_SKIP_BROWSER=1`` is set. On a
failure, each page's screenshot is saved under ``tests/artifacts/``.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

from tests.chat_server import HOST, ChatServer
from tests.interop.browser import WAIT_MS
from tests.paths import ROOT
from tests.processes import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ARTIFACTS = ROOT / "tests" / "artifacts"
RECONNECT_MS = 30_000  # back to "open" after the restart: backoff 0.25-0.5 s, doubling, at most 10 s
PNG = b"\x89PNG\r\n\x1a\n"



@contextlib.contextmanager
def screenshots_on_failure(pages: dict[str, Page], server: list[ChatServer]) -> Iterator[None]:
    """On any failure, save a PNG of each page under tests/artifacts/ and print the server's output."""
    try:
        yield
    except BaseException:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for name, page in pages.items():
            path = ARTIFACTS / f"chat-{name}-failure.png"
            try:
                page.screenshot(path=str(path), full_page=True, timeout=WAIT_MS)
                print(f"screenshot of {name}'s page: {path}")
            except Exception as error:  # keep the original failure
                print(f"no screenshot of {name}'s page: {error}")
        for served in server:
            print(f"--- server output (port {served.port}) ---\n{served.output}")
        raise


def join(page: Page, name: str) -> None:
    from playwright.sync_api import expect

    page.fill("#name", name)
    page.click("#join", timeout=WAIT_MS)
    expect(page.locator("#text")).to_be_enabled(timeout=WAIT_MS)
    expect(page.locator("#name")).to_be_disabled(timeout=WAIT_MS)


def say(page: Page, text: str) -> None:
    page.fill("#text", text, timeout=WAIT_MS)
    page.press("#text", "Enter", timeout=WAIT_MS)


def expect_last_message(page: Page, name: str, text: str) -> None:
    from playwright.sync_api import expect

    last = page.locator("#messages li").last
    expect(last.locator(".name")).to_have_text(name, timeout=WAIT_MS)
    expect(last.locator(".text")).to_have_text(text, timeout=WAIT_MS)


def expect_online(page: Page, names: list[str], timeout: int = WAIT_MS) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#presence li")).to_have_text(sorted(names), timeout=timeout)
    expect(page.locator("#count")).to_have_text(str(len(names)), timeout=timeout)


def test_two_pages_chat_and_reconnect_after_a_server_restart(browser: Browser) -> None:
    from playwright.sync_api import expect

    port = free_port()
    servers = [ChatServer(port)]
    contexts = [browser.new_context(), browser.new_context()]
    alice_name, bob_name = "alice", "<u>bob</u> & co"  # markup must show as text
    alice, bob = (context.new_page() for context in contexts)
    pages = {"alice": alice, "bob": bob}
    page_errors: list[str] = []
    for page in pages.values():
        page.set_default_timeout(WAIT_MS)
        page.on("pageerror", lambda error: page_errors.append(str(error)))
    try:
        with screenshots_on_failure(pages, servers):
            # -- both pages open, join and see each other -----------------------
            for page in pages.values():
                page.goto(f"http://{HOST}:{port}/", timeout=WAIT_MS)
                expect(page.locator("#status")).to_have_text("open", timeout=WAIT_MS)
            join(alice, alice_name)
            expect_online(alice, [alice_name])
            join(bob, bob_name)
            for page in pages.values():
                expect_online(page, [alice_name, bob_name])

            # -- typing and messages ------------------------------------------
            alice.fill("#text", "typ")
            expect(bob.locator("#typing")).to_have_text("alice is typing…", timeout=WAIT_MS)
            hostile = '<img src=x onerror="window.pwned = 1">&amp; <b>hi</b> bob'
            say(alice, hostile)
            for page in pages.values():
                expect_last_message(page, alice_name, hostile)
            expect(bob.locator("#typing")).to_have_text("", timeout=WAIT_MS)  # her message ends it
            say(bob, "hello alice")
            expect_last_message(alice, bob_name, "hello alice")
            for page in pages.values():
                assert page.locator("#messages img, #messages b, #presence u").count() == 0
                assert page.evaluate("window.pwned") is None

            # The screenshot step works (and shows the happy path).
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "chat-before-restart.png"
            shot.write_bytes(b"")
            alice.screenshot(path=str(shot), timeout=WAIT_MS)
            assert shot.read_bytes().startswith(PNG)

            # -- the server restarts on the same port ---------------------------
            assert servers[0].stop() == 0
            for page in pages.values():
                expect(page.locator("#status")).not_to_have_text("open", timeout=WAIT_MS)
                expect(page.locator("#text")).to_have_attribute("placeholder", "offline: sent when back")
            # Said while the server is away: the browser client keeps it, and sends it after the join.
            say(bob, "said while away")
            expect(bob.locator("#text")).to_have_value("", timeout=WAIT_MS)
            servers.append(ChatServer(port))
            for page in pages.values():
                status = page.locator("#status")
                expect(status).to_have_attribute("data-opens", "2", timeout=RECONNECT_MS)
                expect(status).to_have_text("open", timeout=WAIT_MS)
            # Each page joined again by itself, under its name, on the new server.
            for page in pages.values():
                expect_online(page, [alice_name, bob_name])
                expect(page.locator("#text")).to_be_enabled(timeout=WAIT_MS)
            for page in pages.values():
                expect_last_message(page, bob_name, "said while away")
            say(bob, "back again?")
            expect_last_message(alice, bob_name, "back again?")
            say(alice, "yes, after the restart")
            for page in pages.values():
                expect_last_message(page, alice_name, "yes, after the restart")
                # The new server's history holds only what was said since it started, each once.
                expect(page.locator("#messages li .text")).to_have_text(
                    ["said while away", "back again?", "yes, after the restart"], timeout=WAIT_MS
                )
            assert page_errors == []
    finally:
        for context in contexts:
            context.close()
        for served in servers:
            served.stop()


def test_without_a_server_the_page_retries_with_growing_delays(browser: Browser) -> None:
    """The page's WebSocket points at a port nobody listens on: "closed", and retries that back off."""
    from playwright.sync_api import expect

    dead_port = free_port()
    served = ChatServer()  # serves the page only
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        with screenshots_on_failure({"offline": page}, [served]):
            # Before the page's script runs: send its WebSockets to the dead port, noting when.
            page.add_init_script(
                f"""
                window.attempts = [];
                const RealWebSocket = window.WebSocket;
                window.WebSocket = class extends RealWebSocket {{
                  constructor(url, protocols) {{
                    window.attempts.push(performance.now());
                    super(String(url).replace(/:\\d+\\//, ":{dead_port}/"), protocols);
                  }}
                }};
                """
            )
            page.goto(f"http://{HOST}:{served.port}/", timeout=WAIT_MS)
            status = page.locator("#status")
            expect(status).to_have_text("closed", timeout=WAIT_MS)
            expect(page.locator("#retry")).to_contain_text("reconnecting in", timeout=WAIT_MS)
            # Delays of 250-500, 500-1000 and 1000-2000 ms (plus the failed connects): 4 attempts in < 4 s.
            page.wait_for_function("window.attempts.length >= 4", timeout=WAIT_MS)
            times: list[float] = page.evaluate("window.attempts.slice(0, 4)")
            gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
            assert gaps[0] >= 250 and gaps[1] >= 500 and gaps[2] >= 1000, gaps
            assert gaps[2] > gaps[0], gaps
            assert status.get_attribute("data-opens") == "0"
            expect(page.locator("#join")).to_be_disabled(timeout=WAIT_MS)
    finally:
        context.close()
        served.stop()
