"""The app of tests/servers/test_threaded.py: WebSockets on threaded servers, every style.

``/ws`` echoes each message from a listener (event style); a message
``sleep`` makes its listener sleep 1 s first (a listener that blocks, as a
database query would). ``/blocking`` reads with ``receive()`` in a thread of
its own (blocking style). ``/sock`` is a Flask-Sock echo route
(``takeover.flask_sock``). ``/handler`` echoes from a blocking function given
as ``upgrade_websocket(request, handler=...)``; ``/handler-once`` echoes one
message and returns, ``/handler-raises`` raises after one message. ``/`` is
plain HTTP.

The environment variable ``THREADED_APP_HANDLER_THREADS``, when set, is the
``handler_threads`` cap of ``/sock`` (through ``SOCK_SERVER_OPTIONS``) and of
the ``/handler`` routes (through the keyword).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, request

from takeover import ConnectionClosed, WebSocket, upgrade_websocket
from takeover.flask_sock import Sock

app = Flask(__name__)

#: The process-wide cap on blocking handlers, when the test sets one.
CAP: dict[str, Any] = (
    {"handler_threads": int(os.environ["THREADED_APP_HANDLER_THREADS"])}
    if os.environ.get("THREADED_APP_HANDLER_THREADS")
    else {}
)
# ping_interval 60: no ping in the tests' silences (up to 25 s), whose raw clients read only echoes.
app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": 60, **CAP}
sock = Sock(app)


@app.route("/")
def index() -> str:
    return "plain\n"


@app.route("/ws", websocket=True)
def echo() -> Any:
    ws, response = upgrade_websocket(request, idle_timeout=None)

    def on_message(event: Any) -> None:
        if event.data == "sleep":
            time.sleep(1)
        ws.send(event.data)

    ws.onmessage = on_message
    return response


@app.route("/blocking", websocket=True)
def blocking() -> Any:
    ws, response = upgrade_websocket(request, idle_timeout=None)

    def loop() -> None:
        try:
            while True:
                ws.send(ws.receive())
        except ConnectionClosed:
            pass

    ws.onopen = lambda event: threading.Thread(target=loop, daemon=True).start()
    return response


@sock.route("/sock")
def sock_echo(ws: Any) -> None:
    while True:
        ws.send(ws.receive())


def echo_all(ws: WebSocket) -> None:
    for message in ws:
        ws.send(message)


def echo_once(ws: WebSocket) -> None:
    ws.send(ws.receive())


def raise_after_one(ws: WebSocket) -> None:
    ws.receive()
    raise RuntimeError("the /handler-raises handler fails on purpose")


HANDLERS: dict[str, Callable[[WebSocket], None]] = {
    "/handler": echo_all,
    "/handler-once": echo_once,
    "/handler-raises": raise_after_one,
}


def handler_view() -> Any:
    _, response = upgrade_websocket(request, idle_timeout=None, handler=HANDLERS[request.path], **CAP)
    return response


for path in HANDLERS:
    app.add_url_rule(path, path, handler_view, websocket=True)
