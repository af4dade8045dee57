"""The app the metrics and status-page tests serve: an echo WebSocket that may join a hub room,
takeover's metrics and its status page, mounted.

* ``/ws[?room=R]``: upgrade; every message is echoed, but ``pid``, answered with this process's
  pid; with ``room`` the socket also joins R of the hub at ``TAKEOVER_HUB`` (``memory://`` by
  default; ``HUB_CHECK`` is its health check interval).
* ``POST /publish?room=R``: the body, published to R; ``GET /pid``: this process's pid.
* ``/metrics``: :data:`takeover.metrics.wsgi_app`; ``/status``: :data:`takeover.metrics.status_app`.
* ``/guarded``: a :class:`~takeover.metrics.status.StatusApp` whose ``authorize`` wants the
  header ``X-Status-Token: secret``; ``/denied``: one whose ``authorize`` always says no.
"""

from __future__ import annotations

import json
import os

from flask import Flask, Response, request
from werkzeug.middleware.dispatcher import DispatcherMiddleware

import takeover.metrics
from takeover import Hub, MessageEvent, WebSocket, upgrade_websocket
from takeover.metrics.status import StatusApp

hub = Hub(
    os.environ.get("TAKEOVER_HUB", "memory://"), health_check_interval=float(os.environ.get("HUB_CHECK", "1"))
)
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


@flask_app.post("/publish")
def publish() -> Response:
    publication = hub.publish(request.args["room"], request.get_data(as_text=True))
    answer = {"offset": publication.offset, "pid": os.getpid()}
    return Response(json.dumps(answer), mimetype="application/json")


@flask_app.get("/pid")
def pid() -> Response:
    return Response(str(os.getpid()))


app = DispatcherMiddleware(
    flask_app,
    {
        "/metrics": takeover.metrics.wsgi_app,
        "/status": takeover.metrics.status_app,
        "/guarded": StatusApp(authorize=lambda environ: environ.get("HTTP_X_STATUS_TOKEN") == "secret"),
        "/denied": StatusApp(authorize=lambda environ: False),
    },
)
