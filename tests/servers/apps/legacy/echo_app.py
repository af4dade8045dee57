"""A gevent-websocket echo app, written against gevent-websocket's documentation.

    python tests/servers/apps/legacy/echo_app.py --handler geventwebsocket|takeover --port 0

``websocket_app`` is the README's low-level example made a loop: the handler
puts the WebSocket in ``environ["wsgi.websocket"]``, ``receive()`` returns
``None`` once the connection is closed. ``/close?code=C&reason=R`` closes from
the server side with ``ws.close(code, message)``, ``/raise`` raises after one
message, ``/info`` describes the first message; plain HTTP requests get a page.
The same file runs on gevent-websocket's handler and on takeover's (only the
``handler_class`` differs); it prints one ``ws://HOST:PORT/`` line when it listens.
"""

from __future__ import annotations

import argparse
import signal
from typing import Any
from urllib.parse import parse_qs

import gevent
from gevent.pywsgi import WSGIServer


def websocket_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    ws = environ.get("wsgi.websocket")
    if ws is None:
        body = b"plain HTTP: " + environ["PATH_INFO"].encode() + b"\n"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    if environ["PATH_INFO"] == "/close":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        ws.receive()  # wait for one message, then close from this side
        ws.close(int(query["code"][0]), query.get("reason", [""])[0].encode())
        return []
    if environ["PATH_INFO"] == "/raise":
        ws.receive()
        raise RuntimeError("the application failed")
    if environ["PATH_INFO"] == "/info":
        ws.send(f"{type(ws.receive()).__name__} {ws.path} {ws.origin} {environ['wsgi.websocket_version']}")
    while True:
        message = ws.receive()
        if message is None:
            break
        ws.send(message)
    return []


def handler_class(name: str, max_message_size: int | None) -> Any:
    if name == "geventwebsocket":
        from geventwebsocket.handler import WebSocketHandler

        return WebSocketHandler
    from takeover.legacy import WebSocketHandler as Legacy

    if max_message_size is None:
        return Legacy

    class Handler(Legacy):  # type: ignore[misc]
        pass

    Handler.max_message_size = max_message_size
    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handler", choices=["geventwebsocket", "takeover"], default="takeover")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-message-size", type=int, default=None, help="takeover's handler only")
    args = parser.parse_args()
    handler = handler_class(args.handler, args.max_message_size)
    server = WSGIServer((args.host, args.port), websocket_app, handler_class=handler)
    server.start()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, server.stop)
    print(f"{args.handler} echo listening on ws://{args.host}:{server.server_port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
