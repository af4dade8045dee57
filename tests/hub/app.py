"""The app the hub tests run in several server processes: a room per WebSocket, HTTP to drive it.

The hub comes from the environment: ``TAKEOVER_HUB`` (the URL, or several Redis URLs
separated by commas: one per server), ``HUB_HISTORY``,
``HUB_PRESENCE_TTL`` and ``HUB_CHECK`` (the health check interval);
``MAX_BUFFERED`` is the WebSockets' ``max_buffered_amount``.

* ``/ws?room=R&name=N[&since=OFFSET][&envelope=1]``: upgrade and join R with meta
  ``{"name": N, "pid": PID}``. Room messages arrive as they were published; the
  replayed ones (``since``) come before ``{"hello": {"pid": PID, "joined": BOOL}}``
  (what ``join`` returned), the live ones after it.
* A WebSocket's own messages are commands, answered on it: ``{"join": R}``, ``{"leave": R}``
  (answered ``{"rooms": [...]}``, its rooms after that) and ``{"rooms": null}``.
* ``POST /publish?room=R[&binary=1]`` (the body, as text or bytes): ``{"offset": ..., "remote": ...}``.
* ``GET /presence?room=R``: the member names, sorted; ``GET /history?room=R[&since=N]``:
  ``[[offset, data], ...]``; ``GET /healthy``: ``{"healthy": ..., "pid": ...}``; ``GET /health``:
  ``hub.health()``; ``GET /shard?room=R``: ``hub.shard(R)``;
  ``GET /gaps``: the ``"gap"`` events this process saw, ``[[room, first, last], ...]``;
  ``GET /metrics``: :data:`takeover.metrics.wsgi_app`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from flask import Flask, Response, request

from takeover import Hub, MessageEvent, upgrade_websocket

URL = os.environ.get("TAKEOVER_HUB", "memory://")
hub = Hub(
    URL,  # several Redis URLs joined with commas are the list of them (tests/hub/test_shards.py)
    history=int(os.environ.get("HUB_HISTORY", "100")),
    presence_ttl=float(os.environ.get("HUB_PRESENCE_TTL", "30")),
    health_check_interval=float(os.environ.get("HUB_CHECK", "1")),
)
MAX_BUFFERED = int(os.environ.get("MAX_BUFFERED", 1 << 24))
if os.environ.get("HUB_SLOW_SUBSCRIBE"):
    # tests/hub/test_faults.py: Redis confirms the subscription of a room named "slow..." only
    # HUB_SLOW_SUBSCRIBE seconds after the join asked for it (past the join's wait for it).
    import gevent

    from takeover.hub._resp import Subscription

    _subscribe = Subscription.subscribe

    def _slow_subscribe(self: Subscription, *channels: bytes) -> None:
        slow = tuple(channel for channel in channels if b":room:slow" in channel)
        _subscribe(self, *(channel for channel in channels if channel not in slow))
        if slow:
            gevent.spawn_later(float(os.environ["HUB_SLOW_SUBSCRIBE"]), _subscribe, self, *slow)

    Subscription.subscribe = _slow_subscribe  # type: ignore[method-assign]
gaps: list[list[Any]] = []
hub.on("gap", lambda room, first, last: gaps.append([room, first, last]))
app = Flask(__name__)


def _json(value: Any) -> Response:
    return Response(json.dumps(value), mimetype="application/json")


@app.route("/ws", websocket=True)
def ws() -> Response:
    socket, response = upgrade_websocket(request, max_buffered_amount=MAX_BUFFERED)
    since = request.args.get("since", type=int)
    meta = {"name": request.args.get("name", ""), "pid": os.getpid()}
    envelope = request.args.get("envelope") == "1"  # messages as {"room", "offset", "data"}
    joined = hub.join(socket, request.args["room"], meta=meta, since=since, envelope=envelope)
    hello = json.dumps({"hello": {"pid": os.getpid(), "joined": joined}})
    socket.add_event_listener("open", lambda event: socket.send(hello))  # after the hub's: replays go first

    def on_message(event: MessageEvent) -> None:
        command = json.loads(event.data)
        if "join" in command:
            hub.join(socket, command["join"], meta=meta)
        elif "leave" in command:
            hub.leave(socket, command["leave"])
        socket.send(json.dumps({"rooms": sorted(hub.rooms(socket))}))

    socket.add_event_listener("message", on_message)  # event style: handed over on threaded servers
    return response


@app.post("/publish")
def publish() -> Response:
    body = request.get_data()
    publication = hub.publish(request.args["room"], body if request.args.get("binary") else body.decode())
    return _json({"offset": publication.offset, "remote": publication.remote, "pid": os.getpid()})


@app.get("/presence")
def presence() -> Response:
    return _json(sorted(member.meta["name"] for member in hub.presence(request.args["room"])))


@app.get("/history")
def history() -> Response:
    messages = hub.history(request.args["room"], since=request.args.get("since", type=int))
    return _json([[m.offset, m.data if isinstance(m.data, str) else {"hex": m.data.hex()}] for m in messages])


@app.get("/healthy")
def healthy() -> Response:
    return _json({"healthy": hub.healthy, "pid": os.getpid()})


@app.get("/health")
def health() -> Response:
    return _json(hub.health())


@app.get("/shard")
def shard() -> Response:
    return _json(hub.shard(request.args["room"]))


@app.get("/gaps")
def gap_events() -> Response:
    return _json(gaps)


@app.get("/metrics")
def metrics() -> Any:
    """takeover.metrics' exposition (Flask calls a WSGI app it is given)."""
    import takeover.metrics

    return takeover.metrics.wsgi_app
