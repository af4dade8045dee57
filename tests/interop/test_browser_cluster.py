"""examples/chat across processes in Chromium: ``make demo-cluster``'s cluster, on free ports.

Redis, the chat on gunicorn (4 gevent workers) and the chat on ``takeover
serve`` are started with the functions of ``examples/chat/cluster.py``. One
page on each server: they talk to each other and see one presence list, and
typing crosses from one to the other. The ``takeover serve`` process restarts:
its page reconnects and gets what was said meanwhile from Redis. Then Redis
is killed and started again on the same port, empty: both pages must go on
talking (the hub reports the lost messages, and the pages reload the room)
without reconnecting, and a page that joins afterwards must see everyone.

Debian's ``/usr/bin/chromium`` and ``redis-server`` (see test_browser_chat.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from examples.chat import cluster
from tests.interop.browser import WAIT_MS
from tests.interop.test_browser_chat import (
    ARTIFACTS,
    RECONNECT_MS,
    expect_last_message,
    expect_online,
    free_port,
    join,
    say,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

#: After Redis comes back: the hubs reconnect (backoff up to 2 s), the first message finds the gap
#: (a new epoch of offsets) and every page reloads its history.
RECOVER_MS = 20_000


@contextlib.contextmanager
def running(tmp_path: Path) -> Iterator[cluster.Cluster]:
    """Redis and the two servers, as ``make demo-cluster`` starts them, on free ports; stopped at the end."""
    with cluster.Cluster(tmp_path) as started:
        started.start(free_port(), free_port(), free_port())
        yield started


@contextlib.contextmanager
def evidence_on_failure(pages: dict[str, Page], started: cluster.Cluster) -> Iterator[None]:
    """On a failure: a screenshot of each page under tests/artifacts/, and every process's output."""
    try:
        yield
    except BaseException:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for name, page in pages.items():
            path = ARTIFACTS / f"cluster-{name}-failure.png"
            try:
                page.screenshot(path=str(path), full_page=True, timeout=WAIT_MS)
                print(f"screenshot of {name}'s page: {path}")
            except Exception as error:  # keep the original failure
                print(f"no screenshot of {name}'s page: {error}")
        for child in (started.redis, *started.servers.values()):
            if child is not None:
                print(f"--- {child.label} ---\n{child.output}")
        raise


def opened(page: Page) -> str | None:
    """How many times the page's WebSocket opened (the badge's ``data-opens``)."""
    return page.locator("#status").get_attribute("data-opens")


def test_two_servers_one_room_through_redis_and_a_redis_restart(browser: Browser, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    with running(tmp_path) as started:
        contexts = [browser.new_context() for _ in range(3)]
        alice, bob, carol = (context.new_page() for context in contexts)
        pages = {"alice": alice, "bob": bob, "carol": carol}
        ports = {"alice": started.servers["gunicorn"].port, "bob": started.servers["serve"].port}
        ports["carol"] = ports["bob"]
        page_errors: list[str] = []
        for page in pages.values():
            page.set_default_timeout(WAIT_MS)
            page.on("pageerror", lambda error: page_errors.append(str(error)))
        try:
            with evidence_on_failure(pages, started):
                # -- one page on each server: one room ------------------------------
                for name in ("alice", "bob"):
                    pages[name].goto(f"http://{cluster.HOST}:{ports[name]}/", timeout=WAIT_MS)
                    expect(pages[name].locator("#status")).to_have_text("open", timeout=WAIT_MS)
                join(alice, "alice")
                expect_online(alice, ["alice"])
                join(bob, "bob")
                for page in (alice, bob):
                    expect_online(page, ["alice", "bob"])

                alice.fill("#text", "typ")
                expect(bob.locator("#typing")).to_have_text("alice is typing…", timeout=WAIT_MS)
                say(alice, "hello from gunicorn")
                say(bob, "hello from takeover serve")
                for page in (alice, bob):
                    expect_last_message(page, "bob", "hello from takeover serve")
                    expect(page.locator("#messages li .text")).to_have_text(
                        ["hello from gunicorn", "hello from takeover serve"], timeout=WAIT_MS
                    )

                # -- the second server restarts: its page catches up from Redis ----------
                assert started.servers["serve"].stop() == 0
                expect(bob.locator("#status")).not_to_have_text("open", timeout=WAIT_MS)
                expect_online(alice, ["alice"])
                say(alice, "while you were away")
                expect_last_message(alice, "alice", "while you were away")
                started.servers["serve"] = cluster.start_serve(ports["bob"], started.hub)
                expect(bob.locator("#status")).to_have_attribute("data-opens", "2", timeout=RECONNECT_MS)
                expect(bob.locator("#notice")).to_have_text("back: 1 missed message replayed")
                kept_and_missed = ["hello from gunicorn", "hello from takeover serve", "while you were away"]
                expect(bob.locator("#messages li .text")).to_have_text(kept_and_missed, timeout=WAIT_MS)
                for page in (alice, bob):
                    expect_online(page, ["alice", "bob"])

                # -- Redis restarts, empty: the pages go on -------------------------------
                opens = {name: opened(pages[name]) for name in ("alice", "bob")}
                started.restart_redis()
                say(alice, "after the restart")
                for page in (alice, bob):
                    expect_last_message(page, "alice", "after the restart")
                    # The hub found messages it could not recover (Redis lost them): the page reloaded.
                    expect(page.locator("#notice")).to_contain_text("reloaded the room", timeout=RECOVER_MS)
                    texts = page.locator("#messages li .text")
                    expect(texts).to_have_text(["after the restart"], timeout=WAIT_MS)
                say(bob, "still here")
                for page in (alice, bob):
                    expect_last_message(page, "bob", "still here")

                # Presence came back into the new Redis: a newcomer sees everyone, everyone sees her.
                carol.goto(f"http://{cluster.HOST}:{ports['carol']}/", timeout=WAIT_MS)
                expect(carol.locator("#status")).to_have_text("open", timeout=WAIT_MS)
                join(carol, "carol")
                for page in pages.values():
                    expect_online(page, ["alice", "bob", "carol"])
                expect(carol.locator("#messages li .text")).to_have_text(
                    ["after the restart", "still here"], timeout=WAIT_MS
                )
                say(carol, "hi all")
                for page in pages.values():
                    expect_last_message(page, "carol", "hi all")
                # Nobody's WebSocket had to reconnect for any of this.
                assert {name: opened(pages[name]) for name in opens} == opens
                assert page_errors == []
        finally:
            for context in contexts:
                context.close()
