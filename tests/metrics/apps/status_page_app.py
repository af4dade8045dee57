"""The app the status page tests serve: an echo WebSocket and takeover's status page, mounted.

* ``/ws[?room=R]``: upgrade; every message is echoed, but ``pid``, answered with this
  process's pid; with ``room`` the socket also joins R of a ``memory://`` hub.
* ``/status``: :data:`takeover.metrics.status_app` (the page, ``?format=json``, its WebSocket).
* ``/guarded``: a :class:`~takeover.metrics.status.StatusApp` whose ``authorize`` wants the
  header ``X-Status-Token: secret``; ``/denied``: one whose ``authorize`` always says no.
"""

from __future__ import annotations

import os

from flask import Flask, Response, request
from werkzeug.middleware.dispatcher import DispatcherMiddleware

import takeover.metrics
from takeover import Hub, MessageEvent, WebSocket, upgrade_websocket
from takeover.metrics.status import StatusApp

hub = Hub("memory://")
flask_app = Flask(__name__)


@flask_app.route("/ws", websocket=True)
def ws() -> Response:
    socket, response = upgrade_websocket(request)
    room = request.args.get("room")
    if room:
        hub.join(socket, room)
    socket.add_event_listener("message", lambda event: echo(socket, event))
    return response


def echo(socket: WebSocket, event: MessageEvent) -> None:
    socket.send(str(os.getpid()) if event.data == "pid" else event.data)


app = DispatcherMiddleware(
    flask_app,
    {
        "/status": takeover.metrics.status_app,
        "/guarded": StatusApp(authorize=lambda environ: environ.get("HTTP_X_STATUS_TOKEN") == "secret"),
        "/denied": StatusApp(authorize=lambda environ: False),
    },
)
