"""The app of tests/servers/test_threaded.py: event-style WebSockets on threaded servers.

``/ws`` echoes each message; a message ``sleep`` makes its listener sleep 1 s
first (a listener that blocks, as a database query would). ``/blocking``
reads with ``receive()`` in a thread of its own (blocking style). ``/`` is
plain HTTP.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from flask import Flask, request

from takeover import ConnectionClosed, upgrade_websocket

app = Flask(__name__)


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
