"""The Flask app tests/servers/test_uwsgi.py runs on uWSGI (``--module tests.servers.apps.uwsgi_app:app``).

* ``/`` answers ``pid=... thread=...``: which worker, and which of its threads, answered.
* ``/ws`` echoes event-style (a ``message`` listener): handed over, the request returns.
* ``/blocking`` echoes with ``for message in ws`` in a thread (a greenlet under
  ``--gevent``) started by the ``open`` listener: no ``message`` listener; the
  session is handed over all the same, and the thread reads from there.

At import it sets ``uwsgi.atexit`` to a hook that prints ``app atexit pid=...``:
takeover's hook, installed at the first upgrade, must run it after its own.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from flask import Flask, request

from takeover import WebSocket, upgrade_websocket

app = Flask(__name__)

try:
    import uwsgi
except ImportError:  # imported outside uWSGI (a linter, a test collecting modules)
    uwsgi = None


def _app_atexit() -> None:
    print(f"app atexit pid={os.getpid()}", flush=True)


if uwsgi is not None:
    uwsgi.atexit = _app_atexit


@app.route("/")
def index() -> str:
    return f"pid={os.getpid()} thread={threading.current_thread().name}"


@app.route("/ws", websocket=True)
def echo() -> Any:
    ws, response = upgrade_websocket(request)
    ws.add_event_listener("message", lambda event: ws.send(event.data))
    return response


def _echo_loop(ws: WebSocket) -> None:
    for message in ws:
        ws.send(message)


@app.route("/blocking", websocket=True)
def blocking() -> Any:
    ws, response = upgrade_websocket(request)
    if getattr(uwsgi, "loop", None) == b"gevent":
        import gevent

        ws.onopen = lambda event: gevent.spawn(_echo_loop, ws)
    else:
        ws.onopen = lambda event: threading.Thread(target=_echo_loop, args=(ws,), daemon=True).start()
    return response
