"""Takes docs/_static/status-page.png, the status page's screenshot in docs/guides/operations.rst.

    .venv/bin/python docs/screenshot_status.py [--output PATH]

It serves this file's :data:`app` (a chat-like room app: each WebSocket joins a
room of a ``memory://`` hub and what it sends is published to its room, with
``takeover.metrics.status_app`` at ``/status``) on gunicorn with three gthread
workers in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), on 127.0.0.1 only.
Then it connects a few dozen clients to a handful of rooms, keeps some of them
talking, closes some with various codes (and drops one without a close), opens
the page in headless Chromium (Debian's ``/usr/bin/chromium``, through
Playwright) and saves the screenshot once the page shows them all.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUTPUT = HERE / "_static" / "status-page.png"
WORKERS = 3
# room -> clients in it
ROOMS = {"lobby": 14, "support": 6, "game-42": 5, "announcements": 4, "team/ops": 3, "dm:ana,bo": 2}
CLOSES = {1000: 5, 1001: 2, 4001: 3}  # code -> clients closed with it (one more is dropped: 1006)
WAIT = 30.0


def _make_app() -> Any:
    from flask import Flask, Response, request
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    import takeover.metrics
    from takeover import Hub, MessageEvent, upgrade_websocket

    hub = Hub("memory://")
    flask_app = Flask(__name__)

    @flask_app.route("/ws", websocket=True)
    def ws() -> Response:
        socket, response = upgrade_websocket(request)
        room = request.args["room"]
        hub.join(socket, room)

        def on_message(event: MessageEvent) -> None:
            hub.publish(room, event.data)

        socket.add_event_listener("message", on_message)
        return response

    return DispatcherMiddleware(flask_app, {"/status": takeover.metrics.status_app})


if __name__ != "__main__":  # imported by gunicorn: the app
    app = _make_app()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _figures(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status?format=json", timeout=10) as response:
        figures: dict[str, Any] = json.load(response)
        return figures


def _wait(port: int, holds: Any, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while True:
        try:
            figures = _figures(port)
            if holds(figures):
                return figures
        except OSError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshot_status: {what} never happened")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright
    from websockets.sync.client import ClientConnection, connect

    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="takeover-status-") as directory, contextlib.ExitStack() as stack:
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=directory, PYTHONUNBUFFERED="1")
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "16", "-w", str(WORKERS),
             "--graceful-timeout", "3", "--pythonpath", str(HERE), "-b", f"127.0.0.1:{port}",
             "screenshot_status:app"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        stack.callback(server.wait, 15)
        stack.callback(server.terminate)
        _wait(port, lambda f: len(f["processes"]) == WORKERS, f"{WORKERS} workers")

        clients: list[ClientConnection] = []
        for room, count in ROOMS.items():
            for _ in range(count):
                clients.append(stack.enter_context(connect(f"ws://127.0.0.1:{port}/ws?room={room}")))
        # Closes to show: by code, and one connection lost (no close frame: 1006).
        extra = [stack.enter_context(connect(f"ws://127.0.0.1:{port}/ws?room=lobby"))
                 for _ in range(sum(CLOSES.values()) + 1)]
        for code, count in CLOSES.items():
            for _ in range(count):
                extra.pop().close(code=code)
        extra.pop().socket.close()

        stop = threading.Event()

        def talk() -> None:  # a few clients keep talking: messages in and out per second
            number = 0
            while not stop.wait(0.05):
                for client in clients[::5]:
                    number += 1
                    client.send(f"message {number}")
                for client in clients:  # read what the rooms deliver, so that nothing backs up
                    with contextlib.suppress(TimeoutError):
                        while True:
                            client.recv(timeout=0)

        talker = threading.Thread(target=talk, daemon=True)
        talker.start()
        stack.callback(talker.join, 10)
        stack.callback(stop.set)
        total = len(clients)
        _wait(port, lambda f: f["total"]["connections_open"] == total and f["total"]["hub_lag"]["count"] > 0,
              f"{total} open and hub deliveries")

        playwright = stack.enter_context(sync_playwright())
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        stack.callback(browser.close)
        page = browser.new_page(viewport={"width": 1280, "height": 600}, color_scheme="light")
        page.goto(f"http://127.0.0.1:{port}/status", timeout=10_000)
        expect(page.locator("#state")).to_have_text("live", timeout=10_000)
        expect(page.locator("#open")).to_have_text(str(total + 1), timeout=10_000)  # and the page's own
        expect(page.locator("#in-rate")).not_to_have_text("0", timeout=10_000)
        expect(page.locator("#processes tbody tr")).to_have_count(WORKERS, timeout=10_000)
        expect(page.locator('#closes tr[data-code="1006"]')).to_have_count(1, timeout=10_000)
        page.wait_for_timeout(1500)  # a few updates: rates settle
        args.output.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.output), full_page=True)
        print(f"saved {args.output}")


if __name__ == "__main__":
    main()
