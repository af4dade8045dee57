"""The app of tests/interop/test_browser_client.py: takeover.js in a page, a hub room with envelopes.

``/`` is the page: it imports ``/takeover.js`` (served with the documented one-liner),
opens a ``ResumingSocket`` on ``?ws=`` (a WebSocket URL; by default this server's
``/ws?room=`` the page's ``room``) and records in ``window`` what it receives
(``seen``: ``[offset, data]``), its ``resync`` events and its opens; ``?since=``
is the client's ``since`` option. ``/ws`` joins
the room with ``envelope=True`` and the ``since`` the client sends. ``/publisher`` is
the other page: it publishes ``m0``, ``m1``, ... ``m<count - 1>`` to its ``room``, one
``POST /publish`` at a time every 30 ms, trying a message again while the server is away
(``window.published`` counts them). The hub is on ``TAKEOVER_HUB`` (a Redis URL: it
outlives this server's restarts).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, request

import takeover
from takeover import Hub, upgrade_websocket

app = Flask(__name__)
hub = Hub(os.environ.get("TAKEOVER_HUB", "memory://"), history=1000)
# The documented one-liner that serves the client:
app.add_url_rule("/takeover.js", view_func=lambda: (takeover.client_js(), {"Content-Type": "text/javascript"}))  # noqa: E501

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>takeover.js</title>
<script type="module">
import { ResumingSocket } from "/takeover.js";
const params = new URLSearchParams(location.search);
const url = params.get("ws") || "/ws?room=" + encodeURIComponent(params.get("room"));
window.seen = [];
window.resyncs = [];
window.opens = 0;
const since = params.get("since") === null ? null : Number(params.get("since"));
const socket = new ResumingSocket(url, { minDelay: 50, maxDelay: 400, since });
socket.addEventListener("open", () => { window.opens += 1; });
socket.addEventListener("message", (event) => { window.seen.push([event.offset, event.data]); });
socket.addEventListener("resync", (e) => { window.resyncs.push([e.reason, e.first, e.last]); });
window.socket = socket;
</script>
"""


PUBLISHER = """<!doctype html>
<meta charset="utf-8">
<title>publisher</title>
<script type="module">
const params = new URLSearchParams(location.search);
const room = params.get("room"), count = Number(params.get("count"));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
window.published = 0;
window.retries = 0;
for (let n = 0; n < count; n += 1) {
  // One message at a time, in order; while the server is away, the same one again (bounded).
  for (let attempt = 0; attempt < 1000; attempt += 1) {
    try {
      const url = "/publish?room=" + encodeURIComponent(room);
      const response = await fetch(url, { method: "POST", body: "m" + n });
      if (response.ok) break;
    } catch {}
    window.retries += 1;
    await sleep(50);
  }
  window.published = n + 1;
  await sleep(30);
}
</script>
"""


@app.route("/")
def page() -> Any:
    return PAGE


@app.route("/publisher")
def publisher() -> Any:
    return PUBLISHER


@app.post("/publish")
def publish() -> Any:
    hub.publish(request.args["room"], request.get_data(as_text=True))
    return "", 204


@app.route("/ws", websocket=True)
def ws() -> Any:
    socket, response = upgrade_websocket(request)
    hub.join(socket, request.args["room"], since=request.args.get("since", type=int), envelope=True)
    return response
