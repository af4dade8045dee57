"""takeover in-app (a Flask view returning the upgrade response), broadcast variant.

    python -m takeover serve bench.servers.takeover_inapp_broadcast:app --bind 127.0.0.1:P

The echo side is examples/flask_echo.py's /ws view; a ``broadcast:<n>`` text message
calls ``takeover.broadcast(clients, message)`` n times (framed once per call).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request

from bench.servers._common import BROADCAST_MESSAGE, broadcast_count
from takeover import broadcast, upgrade_websocket

app = Flask(__name__)
clients: set[Any] = set()


@app.route("/ws", websocket=True)
def ws():  # type: ignore[no-untyped-def]
    socket, response = upgrade_websocket(request)
    clients.add(socket)

    def on_message(event: Any) -> None:
        count = broadcast_count(event.data)
        if count is None:
            socket.send(event.data)
            return
        for _ in range(count):
            broadcast(clients, BROADCAST_MESSAGE)

    socket.add_event_listener("message", on_message)
    socket.add_event_listener("close", lambda event: clients.discard(socket))
    return response
