"""Flask-Sock on gevent: a Flask app served by gevent.pywsgi.WSGIServer after patch_all().

python -m bench.servers.flasksock_echo --port P [--broadcast]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import signal  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from flask import Flask  # noqa: E402
from flask_sock import ConnectionClosed, Sock  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

from bench.servers._common import BROADCAST_MESSAGE, broadcast_count, parse_args  # noqa: E402

app = Flask(__name__)
sock = Sock(app)
clients: set[Any] = set()
BROADCAST = False


@sock.route("/ws")  # type: ignore[untyped-decorator]
def ws(ws: Any) -> None:
    if not BROADCAST:
        while True:
            ws.send(ws.receive())
    clients.add(ws)
    try:
        while True:
            message = ws.receive()
            count = broadcast_count(message)
            if count is None:
                ws.send(message)
                continue
            for _ in range(count):
                for client in list(clients):
                    try:
                        client.send(BROADCAST_MESSAGE)
                    except ConnectionClosed:
                        clients.discard(client)
    finally:
        clients.discard(ws)


def main() -> None:
    global BROADCAST
    args = parse_args(__doc__.splitlines()[0])
    BROADCAST = args.broadcast
    server = WSGIServer((args.host, args.port), app, log=None)
    server.start()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, server.stop)
    print(f"flask-sock echo server listening on ws://{args.host}:{server.server_port}/ws", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
