"""A gevent-websocket application that only sends, like gevent-websocket's plot example.

    python tests/servers/apps/legacy/plot_app.py --handler geventwebsocket|takeover --port 0
    gunicorn -k takeover.legacy.gunicorn.LegacyWorker --chdir tests/servers/apps/legacy plot_app:application

A ``WebSocketApplication`` at ``/data`` whose ``on_open`` sends a data point
every ``PLOT_INTERVAL`` seconds (0.1 by default) for a long time and never
calls ``receive()``: ``send()`` raising ``WebSocketError`` is the only way it
learns that its client has gone, and the error ends it (it is not caught by
the application, as in the example). It prints ``plot: sending to HOST:PORT``
when it starts and ``plot: send to HOST:PORT failed after N points: ERROR``
when ``send()`` raises (the client's address tells connections apart), then
calls ``receive()`` once and prints what it returned. ``/``
is a plain page. Only ``handler_class`` differs between the two handlers; run
as a script it prints one ``ws://HOST:PORT/`` line when it listens.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
from collections import OrderedDict
from typing import Any

import gevent
from gevent.pywsgi import WSGIServer
from geventwebsocket import Resource, WebSocketApplication
from geventwebsocket.exceptions import WebSocketError

INTERVAL = float(os.environ.get("PLOT_INTERVAL", "0.1"))
POINTS = 10_000  # 1,000 s at the default interval: far longer than any test


class PlotApplication(WebSocketApplication):  # type: ignore[misc]
    def on_open(self) -> None:
        host, port = self.ws.handler.client_address[:2]
        peer = f"{host}:{port}"
        print(f"plot: sending to {peer}", flush=True)
        sent = 0
        try:
            for index in range(POINTS):
                self.ws.send(f"0 {index} {random.random()}\n")
                sent += 1
                gevent.sleep(INTERVAL)
        except WebSocketError as error:
            print(f"plot: send to {peer} failed after {sent} points: {error}", flush=True)
            # What receive() gives on a connection that is gone (gevent-websocket: None, at once).
            print(f"plot: then receive() from {peer} gave {self.ws.receive()!r}", flush=True)
            raise

    def on_message(self, message: Any) -> None:
        pass  # the client has nothing to say

    def on_close(self, reason: Any) -> None:
        pass


def index(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = b"plot: connect a WebSocket to /data\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


application = Resource(OrderedDict([("^/data", PlotApplication), ("^/.*", index)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handler", choices=["geventwebsocket", "takeover"], default="takeover")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    if args.handler == "geventwebsocket":
        from geventwebsocket.handler import WebSocketHandler
    else:
        from takeover.legacy import WebSocketHandler
    server = WSGIServer((args.host, args.port), application, handler_class=WebSocketHandler)
    server.start()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, server.stop)
    print(f"{args.handler} plot listening on ws://{args.host}:{server.server_port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
