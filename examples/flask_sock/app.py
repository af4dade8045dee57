"""A Flask-Sock app, in the shape of Flask-Sock's own examples, running on takeover.

The only line that differs from a Flask-Sock app is the import: ``from
takeover.flask_sock import ...`` where it said ``from flask_sock import ...``.
Three routes:

* ``/echo`` sends every message back (``"close"`` ends the route);
* ``/clock`` sends the time every ``CLOCK_INTERVAL`` seconds (the environment
  variable; 1 by default) until the client goes;
* ``/broadcast`` sends every message a client sends to every connected client,
  kept in a plain list.

Run it on any server takeover supports::

    takeover serve examples.flask_sock.app:app --bind 127.0.0.1:8000
    gunicorn -k takeover.gunicorn.Worker examples.flask_sock.app:app
    gunicorn -k gthread --threads 16 examples.flask_sock.app:app
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from typing import Any

from flask import Flask

from takeover.flask_sock import ConnectionClosed, Sock

app = Flask(__name__)
app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": 25, "max_message_size": 64 * 1024}
sock = Sock(app)

CLOCK_INTERVAL = float(os.environ.get("CLOCK_INTERVAL", "1"))
clients: list[Any] = []


@sock.route("/echo")
def echo(ws: Any) -> None:
    while True:
        data = ws.receive()
        if data == "close":
            break
        ws.send(data)


@sock.route("/clock")
def clock(ws: Any) -> None:
    while True:
        ws.send(datetime.now(timezone.utc).isoformat())
        time.sleep(CLOCK_INTERVAL)


@sock.route("/broadcast")
def broadcast(ws: Any) -> None:
    clients.append(ws)
    try:
        while True:
            data = ws.receive()
            for client in list(clients):
                try:
                    client.send(data)
                except ConnectionClosed:
                    pass  # it is leaving: its own route removes it
    except ConnectionClosed:
        pass
    finally:
        clients.remove(ws)
