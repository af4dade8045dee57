"""A gevent-websocket chat: a ``WebSocketApplication`` routed by ``Resource``.

    python tests/servers/apps/legacy/chat_app.py --handler geventwebsocket|takeover --port 0

Written the way gevent-websocket's own chat example is: ``on_message`` sends
to every client in ``self.ws.handler.server.clients``; ``on_open`` greets the
new client with its address as the server sees it (``handler.active_client``);
``nick NAME`` keeps a nickname as an attribute of the client's entry
(``handler.active_client.nickname = NAME``, as that example does) and answers
with every client's nickname, and messages carry their sender's.
``/`` is a plain WSGI app next to it. Only ``handler_class`` differs between
the two handlers; it prints one ``ws://HOST:PORT/`` line when it listens.
"""

from __future__ import annotations

import argparse
import json
import signal
from collections import OrderedDict
from typing import Any

import gevent
from gevent.pywsgi import WSGIServer
from geventwebsocket import Resource, WebSocketApplication


class ChatApplication(WebSocketApplication):  # type: ignore[misc]
    def on_open(self) -> None:
        client = self.ws.handler.active_client
        self.ws.send(json.dumps({"type": "welcome", "address": list(client.address)}))

    def on_message(self, message: Any) -> None:
        if message is None:
            return
        if message == "who":
            count = len(self.ws.handler.server.clients)
            self.ws.send(json.dumps({"type": "who", "count": count}))
            return
        if message.startswith("nick "):
            self.set_nickname(message[len("nick "):])
            return
        sender = self.ws.handler.active_client
        nickname = getattr(sender, "nickname", "anonymous")
        for client in list(self.ws.handler.server.clients.values()):
            client.ws.send(json.dumps(
                {"type": "message", "from": list(sender.address), "nickname": nickname, "text": message}
            ))

    def set_nickname(self, nickname: str) -> None:
        # The application's own attribute on the server's entry for this client.
        self.ws.handler.active_client.nickname = nickname
        clients = self.ws.handler.server.clients.values()
        nicknames = sorted(getattr(client, "nickname", "anonymous") for client in clients)
        self.ws.send(json.dumps({"type": "clients", "nicknames": nicknames}))

    def on_close(self, reason: Any) -> None:
        pass


def index(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = b"chat: connect a WebSocket to /chat\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


application = Resource(OrderedDict([("^/chat", ChatApplication), ("^/.*", index)]))


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
    print(f"{args.handler} chat listening on ws://{args.host}:{server.server_port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
