"""A raw gevent TCP echo server (StreamServer, recv/sendall): no WebSocket at all.

    python -m bench.servers.gevent_tcp_echo --port P

The floor cost of a round trip in gevent: the load generator sends a message of N
bytes and waits for N bytes back.
"""

from __future__ import annotations

import signal
from typing import Any

import gevent
from gevent.server import StreamServer

from bench.servers._common import parse_args


def handle(sock: Any, address: Any) -> None:
    recv = sock.recv
    sendall = sock.sendall
    while True:
        data = recv(65536)
        if not data:
            break
        sendall(data)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    server = StreamServer((args.host, args.port), handle)
    server.start()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, server.stop)
    print(f"gevent TCP echo server listening on tcp://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
