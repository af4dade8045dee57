"""takeover's Hub, fan-out scenario: a Flask app whose WebSocket clients all join one room.

    BENCH_HUB_URL=redis://127.0.0.1:P/0 gunicorn -k takeover.gunicorn.Worker -w 4 bench.servers.hub_fanout:app
    BENCH_HUB_URL=memory:// gunicorn -k takeover.gunicorn.Worker -w 1 bench.servers.hub_fanout:app

(the harness starts it with bench/servers/fanout_gunicorn.py). ``/ws``: each client's
view is ``upgrade_websocket(request)``, ``hub.join(ws, ROOM)``, ``return response``
(the drops scenario's members add ``?envelope=1`` and, on a reconnect, ``?since=N``: the
join's ``envelope`` and ``since``);
once open, the client gets one text message, ``joined:<this worker's pid>`` (or
``not-resumed`` when the room no longer keeps what followed its ``since``). ``/pub``:
the publisher's WebSocket; each message it sends is ``hub.publish(ROOM, message)``.
The Hub is made at import, in each worker (gunicorn imports the app after forking).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, request

from takeover import Hub, upgrade_websocket

ROOM = "room"
URL = os.environ.get("BENCH_HUB_URL", "memory://")
HISTORY = int(os.environ.get("BENCH_HUB_HISTORY", "100"))
# Several redis-servers: their URLs joined with commas (a cluster's URL has its own commas).
URLS = URL.split(",") if "," in URL and "+cluster:" not in URL else URL
hub = Hub(URLS, history=HISTORY) if URL.startswith("redis") else Hub(URL)
app = Flask(__name__)


@app.route("/ws", websocket=True)  # Werkzeug routes WebSocket requests only to such rules
def member():  # type: ignore[no-untyped-def]
    ws, response = upgrade_websocket(request)
    # The drops scenario's members: ?envelope=1, and ?since=<the last offset> on a reconnect.
    since, envelope = request.args.get("since", type=int), request.args.get("envelope") == "1"
    resumed = hub.join(ws, ROOM, since=since, envelope=envelope)
    # "not-resumed": what followed since is no longer kept (a real app sends fresh state).
    joined = f"joined:{os.getpid()}" if resumed else "not-resumed"
    ws.add_event_listener("open", lambda event: ws.send(joined))
    return response


@app.route("/pub", websocket=True)
def publisher():  # type: ignore[no-untyped-def]
    ws, response = upgrade_websocket(request)

    def on_message(event: Any) -> None:
        hub.publish(ROOM, event.data)

    ws.add_event_listener("message", on_message)
    return response
