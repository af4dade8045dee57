"""gevent-websocket 0.10.1 on gevent.pywsgi: an environ app echoing ``ws.receive()``.

python -m bench.servers.geventwebsocket_echo --port P [--broadcast] [--takeover]

With ``--takeover`` the same app runs on ``takeover.legacy.WebSocketHandler``
instead of gevent-websocket's handler (the ``takeover-legacy`` row): only
``handler_class`` differs.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

import gevent
from gevent.pywsgi import WSGIServer
from geventwebsocket.exceptions import WebSocketError
from geventwebsocket.handler import WebSocketHandler

from bench.servers._common import BROADCAST_MESSAGE, broadcast_count, parse_args

clients: set[Any] = set()


def not_websocket(start_response: Any) -> list[bytes]:
    start_response("426 Upgrade Required", [("Content-Type", "text/plain"), ("Upgrade", "websocket")])
    return [b"gevent-websocket echo server: connect with a WebSocket client\n"]


def echo_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    ws = environ.get("wsgi.websocket")
    if ws is None:
        return not_websocket(start_response)
    while True:
        msg = ws.receive()
        if msg is None:
            break
        ws.send(msg, binary=isinstance(msg, (bytes, bytearray)))
    return []


def broadcast_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    ws = environ.get("wsgi.websocket")
    if ws is None:
        return not_websocket(start_response)
    clients.add(ws)
    try:
        while True:
            msg = ws.receive()
            if msg is None:
                break
            count = broadcast_count(msg)
            if count is None:
                ws.send(msg, binary=isinstance(msg, (bytes, bytearray)))
                continue
            for _ in range(count):
                for client in list(clients):
                    try:
                        client.send(BROADCAST_MESSAGE)
                    except WebSocketError:
                        clients.discard(client)
    finally:
        clients.discard(ws)
    return []


def main() -> None:
    takeover = "--takeover" in sys.argv
    if takeover:
        sys.argv.remove("--takeover")
    args = parse_args(__doc__.splitlines()[0])
    app = broadcast_app if args.broadcast else echo_app
    handler_class: Any = WebSocketHandler
    if takeover:
        from takeover.legacy import WebSocketHandler as LegacyWebSocketHandler

        handler_class = LegacyWebSocketHandler
    server = WSGIServer((args.host, args.port), app, handler_class=handler_class, log=None)
    server.start()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, server.stop)
    name = "takeover.legacy" if takeover else "gevent-websocket"
    print(f"{name} echo server listening on ws://{args.host}:{server.server_port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
