"""The floor of a thread per WebSocket in CPython: a reference row, not a server to use.

    python -m bench.servers.thread_echo_floor --port P

Each connection gets an OS thread that does nothing but the echo: a blocking
``recv``, takeover's frame parser (its C speedups), the echo framed and written
with ``sendall`` from the same thread. No HTTP server, no Flask, no loop, no
queue between threads: the handshake is read up to its blank line and answered
from the key (takeover's ``accept_key``), nothing else is checked. This is what
any blocking route (Flask-Sock's, ``takeover.flask_sock``'s) can at best cost per
message: one thread woken by the kernel per message, and the GIL taken for it
(issue 19: "takeover.flask_sock ≥ 2x Flask-Sock" measured against it).
"""

from __future__ import annotations

import socket
import threading

from bench.servers._common import parse_args
from takeover.protocol.connection import Connection
from takeover.protocol.events import Message
from takeover.protocol.handshake import accept_key

MAX_HEAD = 64 * 1024


def handshake(conn: socket.socket) -> bytes | None:
    """Answer the upgrade; return the bytes read past the request's head (None: the client went)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk or len(buffer) > MAX_HEAD:
            return None
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    key = ""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip().decode("ascii")
    conn.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key).encode("ascii") + b"\r\n\r\n"
    )
    return rest


def serve(conn: socket.socket) -> None:
    try:
        echo(conn)
    except OSError:  # the client reset the connection: this thread ends
        pass
    finally:
        conn.close()


def echo(conn: socket.socket) -> None:
    rest = handshake(conn)
    if rest is None:
        return
    ws = Connection(max_message_size=64 << 20, trailing_data=rest, extension=None)
    events = ws.receive_data(b"") if rest else []
    for _ in range(10**9):  # until the client closes
        for event in events:
            if type(event) is Message:
                data = event.data
                if isinstance(data, str):
                    conn.sendall(ws.send_message(1, data.encode("utf-8")))
                else:
                    conn.sendall(ws.send_message(2, bytes(data)))
        if ws.has_data_to_send:  # pongs, the close echo
            conn.sendall(ws.data_to_send())
        data = conn.recv(262144)
        if not data:
            return
        events = ws.receive_data(data)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    listener = socket.create_server((args.host, args.port), backlog=1024)
    print(f"thread-per-connection echo floor listening on ws://{args.host}:{args.port}/", flush=True)
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
