"""gevent-websocket 0.10.1 on gevent.pywsgi: an environ app echoing ``ws.receive()``.

python -m bench.servers.geventwebsocket_echo --port P [--broadcast]
"""

from __future__ import annotations

import signal
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
    args = parse_args(__doc__.splitlines()[0])
    app = broadcast_app if args.broadcast else echo_app
    server = WSGIServer((args.host, args.port), app, handler_class=WebSocketHandler, log=None)
    server.start()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, server.stop)
    print(f"gevent-websocket echo server listening on ws://{args.host}:{server.server_port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
