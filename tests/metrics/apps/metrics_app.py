"""The app the metrics tests serve: an echo WebSocket that may join a hub room, and /metrics.

* ``/ws[?room=R]``: upgrade; every message is echoed; with ``room`` the socket joins R
  of the hub at ``TAKEOVER_HUB`` (``memory://`` by default; ``HUB_CHECK`` is its health
  check interval).
* ``POST /publish?room=R``: the body, published to R.
* ``/metrics``: :data:`takeover.metrics.wsgi_app`; ``/status``: :data:`takeover.metrics.status_app`.
"""

from __future__ import annotations

import json
import os

from flask import Flask, Response, request
from werkzeug.middleware.dispatcher import DispatcherMiddleware

import takeover.metrics
from takeover import Hub, MessageEvent, upgrade_websocket

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
    else:
        socket.add_event_listener("message", lambda event: echo(socket, event))
    return response


def echo(socket: object, event: MessageEvent) -> None:
    socket.send(event.data)  # type: ignore[attr-defined]


@flask_app.post("/publish")
def publish() -> Response:
    publication = hub.publish(request.args["room"], request.get_data(as_text=True))
    answer = {"offset": publication.offset, "pid": os.getpid()}
    return Response(json.dumps(answer), mimetype="application/json")


@flask_app.get("/pid")
def pid() -> Response:
    return Response(str(os.getpid()))


app = DispatcherMiddleware(
    flask_app, {"/metrics": takeover.metrics.wsgi_app, "/status": takeover.metrics.status_app}
)
