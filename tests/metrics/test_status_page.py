"""takeover.metrics.status_app, the live status page (issue 22): its figures, and the page in Chromium.

The pure functions behind the page's JSON (rates, the lag's p99, the totals)
are tested with made-up snapshots. Then on real servers, running
tests/metrics/apps/metrics_app.py: ``takeover serve`` with the page open in
headless Chromium, whose numbers must follow WebSocket clients as they connect
and close, without a reload and without a JavaScript error; plain HTTP for
``authorize``, ``?format=json`` and the page's feed; and gunicorn with two
gthread workers in multiprocess mode, both in the page's process table.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from takeover._io.stats import LAG_BUCKETS
from takeover.metrics._status_figures import (
    Rates,
    close_totals,
    hub_rows,
    lag_quantile,
    lag_summary,
    per_second,
    process_row,
    recent_closes,
    redact_url,
    room_members,
    status,
    total_row,
)
from takeover.metrics.status import StatusApp, same_host
from tests.interop.browser import WAIT_MS
from tests.interop.conftest import browser as browser  # headless Chromium, as the interop tests'
from tests.paths import ROOT
from tests.processes import OutputLines, free_port, stop_process

if TYPE_CHECKING:
    from playwright.sync_api import Page

APP = "tests.metrics.apps.metrics_app:app"
HOST = "127.0.0.1"
WAIT = 20.0  # seconds: a server starting, a figure showing up
ROW_KEYS = {
    "pid", "connections_open", "connections_total", "messages_in_per_second", "messages_out_per_second",
    "bytes_in_per_second", "bytes_out_per_second", "closes_recent", "closes_by_minute", "rejections",
    "backpressure_closes", "handovers", "handler_threads", "listener_pool", "hub_healthy", "hub_lag",
}
MARKUP = '<b id="injected">room</b>'  # a room name
MINUTE = 29_000_000  # a minute since the epoch, in 2025


def snapshot(pid: int = 1, **changes: Any) -> dict[str, Any]:
    """A process's snapshot as takeover._io.stats makes it, quiet, at MINUTE."""
    made: dict[str, Any] = {
        "pid": pid, "started": MINUTE * 60.0 - 100, "time": MINUTE * 60.0 + 30, "connections_open": 0,
        "connections_total": 0, "closes": {}, "rejections": {}, "backpressure_closes": 0, "handovers": 0,
        "recent_closes": [], "messages_in": 0, "messages_out": 0, "bytes_in": 0, "bytes_out": 0,
        "handler_threads": {"running": 0, "cap": None}, "listener_pool": None, "hubs": [],
    }
    made.update(changes)
    return made


def lag(buckets: list[int], total: float) -> dict[str, Any]:
    return {"buckets": buckets, "bounds": list(LAG_BUCKETS), "sum": total, "count": sum(buckets)}


def hub(rooms: dict[str, int], healthy: bool = True, buckets: list[int] | None = None) -> dict[str, Any]:
    counts = buckets if buckets is not None else [0] * (len(LAG_BUCKETS) + 1)
    return {"url": "memory://", "healthy": healthy, "deliveries": 10, "gaps": 1,
            "lag": lag(counts, 0.01 * sum(counts)), "rooms": rooms}


# -- the pure functions -----------------------------------------------------------


def test_a_rate_is_the_counters_growth_over_the_time_between_two_snapshots() -> None:
    before = snapshot(messages_in=100)
    after = snapshot(messages_in=350, time=before["time"] + 2.5)
    assert per_second(before, after, "messages_in") == 100.0
    assert per_second(None, after, "messages_in") == 0.0  # first sight
    assert per_second(before, {**after, "started": after["started"] + 1}, "messages_in") == 0.0  # pid reused
    assert per_second(after, {**before, "time": after["time"] + 1}, "messages_in") == 0.0  # went back
    assert per_second(before, {**after, "time": before["time"]}, "messages_in") == 0.0  # no time passed


def test_rates_are_zero_at_first_then_measured_over_at_least_the_window() -> None:
    rates = Rates(window=0.5)
    first = snapshot(messages_out=10)
    assert rates.update(first) == dict.fromkeys(("messages_in", "messages_out", "bytes_in", "bytes_out"), 0.0)
    second = snapshot(messages_out=30, time=first["time"] + 1.0)
    assert rates.update(second)["messages_out"] == 20.0
    soon = snapshot(messages_out=31, time=second["time"] + 0.1)  # another page, a tenth later
    assert rates.update(soon)["messages_out"] == 20.0  # the last rate, not 10/s from a tenth of a second
    later = snapshot(messages_out=40, time=second["time"] + 2.0)
    assert rates.update(later)["messages_out"] == 5.0  # from the last measure's start
    restarted = snapshot(messages_out=5, started=first["started"] + 500, time=later["time"] + 1)
    assert rates.update(restarted)["messages_out"] == 0.0
    rates.keep([2])
    assert rates.update(snapshot(messages_out=99, time=later["time"] + 5))["messages_out"] == 0.0  # forgotten


def test_p99_is_interpolated_in_the_bucket_where_it_falls() -> None:
    bounds = [0.01, 0.1, 1.0]
    assert lag_quantile([0, 0, 0, 0], bounds) is None
    assert lag_quantile([100, 0, 0, 0], bounds) == pytest.approx(0.0099)  # 99% of the way from 0 to 0.01
    # 90 fast, 10 between 0.01 and 0.1: the 99th of 100 is the 9th of those 10.
    assert lag_quantile([90, 10, 0, 0], bounds) == pytest.approx(0.01 + 0.09 * 9 / 10)
    assert lag_quantile([90, 10, 0, 0], bounds, quantile=0.5) == pytest.approx(0.01 * 50 / 90)
    assert lag_quantile([1, 0, 0, 99], bounds) == 1.0  # above every bound: the highest bound, all we know
    assert lag_quantile([98, 0, 2, 0], bounds) == pytest.approx(0.1 + 0.9 * 1 / 2)


def test_a_lag_summary_merges_the_histograms_with_their_mean() -> None:
    one = lag([4] + [0] * len(LAG_BUCKETS), 0.002)
    two = lag([0, 6] + [0] * (len(LAG_BUCKETS) - 1), 0.012)
    summary = lag_summary([one, two])
    assert summary["count"] == 10
    assert summary["buckets"][:2] == [4, 6]
    assert summary["mean"] == pytest.approx(0.0014)
    assert summary["p99"] == pytest.approx(0.001 + 0.0015 * (9.9 - 4) / 6)
    assert lag_summary([summary])["p99"] == summary["p99"]  # a summary merges again (the total row)
    assert lag_summary([]) == {"count": 0, "sum": 0.0, "mean": None, "p99": None, "buckets": [], "bounds": []}


def test_recent_closes_are_the_last_fifteen_minutes_each_one_oldest_first() -> None:
    recent = [[MINUTE - 20, {"1000": 7}], [MINUTE - 14, {"1006": 1}], [MINUTE - 1, {"4001": 2, "1000": 1}],
              [MINUTE, {"4001": 1}]]
    by_minute = recent_closes(recent, MINUTE * 60.0 + 30)
    assert [minute for minute, _ in by_minute] == list(range(MINUTE - 14, MINUTE + 1))
    assert by_minute[0] == [MINUTE - 14, {"1006": 1}]
    assert by_minute[-2:] == [[MINUTE - 1, {"4001": 2, "1000": 1}], [MINUTE, {"4001": 1}]]
    assert list(close_totals(by_minute).items()) == [("1000", 1), ("1006", 1), ("4001", 3)]  # 20 min ago: out


def test_the_total_sums_the_processes() -> None:
    now = MINUTE * 60.0 + 30
    one = process_row(
        snapshot(1, connections_open=4, connections_total=9, recent_closes=[[MINUTE, {"4001": 3}]],
                 handler_threads={"running": 1, "cap": 1000},
                 listener_pool={"threads": 2, "busy": 1, "queued": 0, "max_threads": 16},
                 hubs=[hub({"a": 2}, buckets=[5] + [0] * len(LAG_BUCKETS))]),
        {"messages_in": 2.0, "messages_out": 4.0}, now,
    )
    two = process_row(
        snapshot(2, connections_open=6, connections_total=6, recent_closes=[[MINUTE, {"4001": 1, "1006": 2}]],
                 hubs=[hub({"a": 1}, healthy=False, buckets=[0, 5] + [0] * (len(LAG_BUCKETS) - 1))]),
        {"messages_in": 1.0, "messages_out": 0.5}, now,
    )
    assert set(one) >= ROW_KEYS
    assert one["closes_recent"] == {"4001": 3} and one["hub_healthy"] is True and two["hub_healthy"] is False
    assert one["hub_lag"]["mean"] == pytest.approx(0.01)
    total = total_row([one, two])
    assert set(total) >= ROW_KEYS
    assert total["pid"] == 2
    assert (total["connections_open"], total["connections_total"]) == (10, 15)
    assert (total["messages_in_per_second"], total["messages_out_per_second"]) == (3.0, 4.5)
    assert total["closes_recent"] == {"1006": 2, "4001": 4}
    assert total["closes_by_minute"][-1] == [MINUTE, {"1006": 2, "4001": 4}]
    assert len(total["closes_by_minute"]) == 15
    assert total["handler_threads"] == {"running": 1, "cap": 1000}
    assert total["listener_pool"] == {"threads": 2, "busy": 1, "queued": 0, "max_threads": 16}
    assert total["hub_healthy"] is False  # one process's hub is down
    assert total["hub_lag"]["count"] == 10
    assert total["hub_lag"]["p99"] == pytest.approx(0.001 + 0.0015 * (9.9 - 5) / 5)
    quiet = total_row([process_row(snapshot(), {}, now)])
    assert quiet["hub_healthy"] is None and quiet["listener_pool"] is None
    assert quiet["handler_threads"] == {"running": 0, "cap": None}


def test_rooms_are_summed_over_processes_and_the_top_ones_kept() -> None:
    snapshots = [snapshot(1, hubs=[hub({"a": 3, "b": 1, "empty": 0})]),
                 snapshot(2, hubs=[hub({"b": 5, "c": 1})])]
    assert room_members(snapshots) == ({"b": 6, "a": 3, "c": 1}, 3, 10)
    assert room_members(snapshots, limit=2) == ({"b": 6, "a": 3}, 3, 10)
    [row] = hub_rows(snapshots)
    assert (row["processes"], row["rooms"], row["members"], row["deliveries"]) == (2, 3, 10, 20)


def test_hub_urls_are_shown_without_their_passwords() -> None:
    assert redact_url("redis://:hunter2@redis.example:6379/0") == "redis://:***@redis.example:6379/0"
    assert redact_url("rediss://user:p%40ss@h:1/0, redis://h2:2/0") == "rediss://user:***@h:1/0, redis://h2:2/0"
    assert redact_url("redis+cluster://u:pw@h1:1,h2:2") == "redis+cluster://u:***@h1:1,h2:2"
    assert redact_url("redis://h/0?password=x&db=1") == "redis://h/0?password=***&db=1"
    assert redact_url("memory://") == "memory://"


def test_the_feed_only_accepts_pages_of_its_own_host() -> None:
    assert same_host(None, "status.example:8000")  # not a browser
    assert same_host("http://status.example:8000", "status.example:8000")
    assert same_host("https://status.example", "status.example")
    assert same_host("https://status.example", "status.example:443")
    assert not same_host("https://evil.example", "status.example")
    assert not same_host("http://status.example:8001", "status.example:8000")
    assert not same_host("null", "status.example")
    assert not same_host("https://status.example", None)


def test_the_json_has_every_part() -> None:
    now = MINUTE * 60.0 + 30
    made = status([snapshot(7, hubs=[hub({"r": 2})]), snapshot(3)], Rates(), now)
    assert set(made) == {"time", "processes", "total", "rooms", "room_count", "members", "hubs"}
    assert [row["pid"] for row in made["processes"]] == [3, 7]  # by pid, whoever serves the page
    assert made["rooms"] == {"r": 2} and made["total"]["pid"] == 2 and len(made["hubs"]) == 1


def test_status_app_checks_its_arguments() -> None:
    with pytest.raises(ValueError):
        StatusApp(interval=0)
    with pytest.raises(ValueError):
        StatusApp(interval=float("nan"))
    with pytest.raises(TypeError):
        StatusApp(authorize="admin")  # type: ignore[arg-type]


# -- real servers -------------------------------------------------------------------


class Served:
    """``takeover serve`` (or gunicorn) running metrics_app.py on 127.0.0.1, and its clients."""

    def __init__(self, command: list[str], ready: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [*command, f"{HOST}:{self.port}"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1", **(env or {})),
        )
        self.output = OutputLines(self.process.stdout)
        self.clients = contextlib.ExitStack()
        if self.output.wait_for(ready, WAIT) is None:
            self.stop()
            raise AssertionError(f"the server did not start:\n{self.output.output}")

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def ws(self, path: str = "/ws", **options: Any) -> ClientConnection:
        """A client, closed when the server stops if the test has not closed it."""
        client = connect(f"ws://{HOST}:{self.port}{path}", open_timeout=10, close_timeout=5, **options)
        return self.clients.enter_context(client)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.url(path), headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def status(self, path: str = "/status") -> dict[str, Any]:
        code, headers, body = self.get(f"{path}?format=json")
        assert code == 200 and headers["Content-Type"] == "application/json", (code, headers)
        figures: dict[str, Any] = json.loads(body)
        return figures

    def wait_status(self, holds: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """Poll ``?format=json`` until ``holds(figures)``; fail after WAIT seconds."""
        deadline = time.monotonic() + WAIT
        figures = self.status()
        while not holds(figures):
            assert time.monotonic() < deadline, f"{what}: never so within {WAIT} s; last figures: {figures}"
            time.sleep(0.1)  # a poll's pace, not a synchronisation: the condition is checked each time
            figures = self.status()
        return figures

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.clients.close()
        stop_process(self.process, 15)
        self.output.join(5)


@contextlib.contextmanager
def takeover_serve() -> Iterator[Served]:
    served = Served([sys.executable, "-m", "takeover", "serve", APP, "--bind"], "takeover serving")
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="module")
def server() -> Iterator[Served]:
    with takeover_serve() as served:
        yield served


def test_authorize_returning_false_is_403_for_everything(server: Served) -> None:
    for path in ("/denied", "/denied/", "/denied?format=json", "/guarded"):
        code, _, body = server.get(path)
        assert (code, body) == (403, b"Forbidden\n"), path
    with pytest.raises(InvalidStatus) as refused:
        server.ws("/denied")
    assert refused.value.response.status_code == 403
    code, headers, body = server.get("/guarded", {"X-Status-Token": "secret"})
    assert code == 200 and headers["Content-Type"] == "text/html; charset=utf-8" and b'id="open"' in body


def test_the_page_is_self_contained_html(server: Served) -> None:
    code, headers, body = server.get("/status")
    assert code == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    page = body.decode()
    assert page.startswith("<!doctype html>") and "<script>" in page and "<style>" in page
    for external in ('src="', "<link rel=\"stylesheet\"", "@import", "url("):
        assert external not in page, external
    request = urllib.request.Request(server.url("/status"), data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 405 and refused.value.headers["Allow"] == "GET, HEAD"


def test_the_json_follows_the_clients(server: Served) -> None:
    figures = server.status()
    assert set(figures) == {
        "time", "interval", "processes", "total", "rooms", "room_count", "members", "hubs"
    }
    assert figures["interval"] == 1.0
    [row] = figures["processes"]
    assert set(row) >= ROW_KEYS and set(figures["total"]) >= ROW_KEYS
    assert row["pid"] == server.process.pid and figures["total"]["pid"] == 1
    before = figures["total"]["connections_open"]
    clients = [server.ws("/ws?room=lobby") for _ in range(2)]
    for client in clients:
        client.send("hello")
        assert client.recv(timeout=10) == "hello"
    figures = server.wait_status(lambda f: f["total"]["connections_open"] == before + 2, "2 more open")
    assert figures["rooms"] == {"lobby": 2} and figures["hubs"][0]["members"] == 2
    assert figures["total"]["hub_healthy"] is True

    def busy(f: dict[str, Any]) -> bool:  # rates need two snapshots with messages between them
        for client in clients:
            client.send("x")
            client.recv(timeout=10)
        return bool(f["total"]["messages_in_per_second"] > 0 and f["total"]["messages_out_per_second"] > 0)

    server.wait_status(busy, "messages per second above 0")
    for client in clients:
        client.close(code=4002)
    figures = server.wait_status(
        lambda f: f["total"]["closes_recent"].get("4002") == 2, "two closes with 4002"
    )
    assert figures["total"]["connections_open"] == before
    assert figures["rooms"] == {}


def test_the_feed_sends_the_figures_at_once_and_then_every_interval(server: Served) -> None:
    feed = server.ws("/status")  # no Origin: not a browser, allowed
    first = json.loads(feed.recv(timeout=5))
    assert set(first) >= {"time", "processes", "total"}
    assert first["total"]["connections_open"] >= 1  # the feed's own socket counts
    second = json.loads(feed.recv(timeout=5))
    assert second["time"] > first["time"]
    feed.close()
    with pytest.raises(InvalidStatus) as refused:  # another site's page, with the operator's cookies
        server.ws("/status", origin=Origin("http://evil.example"))
    assert refused.value.response.status_code == 403


# -- the page in Chromium -----------------------------------------------------------


def wait_in_page(page: Page, function: str) -> None:
    """Wait until ``function`` (JavaScript, ``() => ...``) is true in ``page``.

    A function, not an expression: Playwright evaluates an expression with
    ``eval``, which the page's Content-Security-Policy refuses.
    """
    page.wait_for_function(function, timeout=WAIT_MS * 2)


def wait_text(page: Page, selector: str, text: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator(selector)).to_have_text(text, timeout=WAIT_MS * 2)


def shown(page: Page, selector: str) -> str:
    return str(page.text_content(selector, timeout=WAIT_MS))


def test_the_page_follows_clients_as_they_connect_and_close(browser: Any) -> None:
    with takeover_serve() as served:
        context = browser.new_context()
        errors: list[str] = []
        try:
            page = context.new_page()
            page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
            page.on("console", lambda message: errors.append(f"console {message.type}: {message.text}")
                    if message.type in ("error", "warning") else None)
            page.goto(served.url("/status"), timeout=WAIT_MS)
            wait_text(page, "#state", "live")
            # Only the page's own socket is open: it counts, like any WebSocket of the process.
            wait_text(page, "#open", "1")
            page.evaluate("window.sameDocument = true")  # gone if the page reloaded
            # One joins a room whose name is markup: the page must show it as text.
            clients = [served.ws(f"/ws?room={urllib.parse.quote(MARKUP)}"), *(served.ws() for _ in range(4))]
            for client in clients:
                client.send("ping?")
                assert client.recv(timeout=10) == "ping?"
            wait_text(page, "#open", "6")
            assert shown(page, "#processes tbody tr .open") == "6"
            assert shown(page, "#processes tbody tr td") == str(served.process.pid)
            assert page.locator("#processes tbody tr").count() == 1
            assert page.is_visible("#closes-empty")
            wait_text(page, "#rooms tbody td.room", MARKUP)
            assert page.locator("#injected").count() == 0
            for client in clients[:3]:
                client.close(code=4001, reason="test")
            wait_text(page, "#open", "3")
            wait_text(page, '#closes tr[data-code="4001"] .count', "3")
            assert page.is_visible("#closes") and not page.is_visible("#closes-empty")
            assert "application" in shown(page, '#closes tr[data-code="4001"]')
            assert shown(page, "#processes tbody tr .open") == "3"
            assert page.evaluate("window.sameDocument") is True
            assert page.evaluate("window.statusPage.connects") == 1
            assert page.evaluate("window.statusPage.messages") >= 3
            assert page.title() == "takeover \u00b7 3 open"
        finally:
            context.close()
    assert errors == []


def test_the_page_shows_reconnecting_when_its_socket_drops(browser: Any) -> None:
    context = browser.new_context()
    errors: list[str] = []
    try:
        with takeover_serve() as served:
            page = context.new_page()
            page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
            page.goto(served.url("/status"), timeout=WAIT_MS)
            wait_text(page, "#state", "live")
        # The server stopped: the page says so and tries again with a backoff.
        wait_text(page, "#state", "reconnecting")
        wait_in_page(page, "() => window.statusPage.connects >= 2")
        assert page.evaluate("document.body.classList.contains('stale')") is True
    finally:
        context.close()
    assert errors == []


# -- several worker processes --------------------------------------------------------


def test_two_gunicorn_workers_are_two_rows(tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    command = [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "8", "-w", "2",
               "--graceful-timeout", "3", APP, "-b"]
    served = Served(command, "Booting worker", env={"PROMETHEUS_MULTIPROC_DIR": str(directory)})
    try:
        figures = served.wait_status(lambda f: len(f["processes"]) == 2, "two processes")
        pids = {row["pid"] for row in figures["processes"]}
        # Connections go to whichever worker accepts them: open some until both have a few.
        clients: dict[int, list[ClientConnection]] = {pid: [] for pid in pids}
        for _ in range(40):
            client = served.ws()
            client.send("pid")
            clients[int(client.recv(timeout=10))].append(client)
            if all(len(held) >= 2 for held in clients.values()):
                break
        held = {pid: len(each) for pid, each in clients.items()}
        everyone = sum(held.values())

        def rows_match(f: dict[str, Any]) -> bool:
            return {row["pid"]: row["connections_open"] for row in f["processes"]} == held

        figures = served.wait_status(rows_match, f"each worker's row shows its sockets {held}")
        assert figures["total"]["connections_open"] == everyone and figures["total"]["pid"] == 2
        assert all(row["listener_pool"] is not None for row in figures["processes"] if held[row["pid"]])
        closed = [client for each in clients.values() for client in each][:3]
        for client in closed:
            client.close(code=4001)
        figures = served.wait_status(
            lambda f: (f["total"]["closes_recent"].get("4001"), f["total"]["connections_open"])
            == (3, everyone - 3),
            "three closes with 4001",
        )
        assert sum(row["closes_recent"].get("4001", 0) for row in figures["processes"]) == 3
    finally:
        served.stop()
