"""Line echo over a custom ``Upgrade:`` protocol, through the server's ``upgrade`` event.

A client asks for the protocol with an ordinary HTTP/1.1 upgrade request::

    GET / HTTP/1.1
    Host: 127.0.0.1
    Upgrade: line-echo
    Connection: Upgrade

and the server answers ``101 Switching Protocols`` with ``Upgrade: line-echo``;
from then on every ``\\n``-terminated line the client sends is sent back as is.
The bytes that arrived together with the request (``head``) are the first
bytes of the new protocol, so a client may send its first line in the same
packet as the request.

Only well-formed ``line-echo`` upgrades reach the ``upgrade`` listener: the
server's ``should_upgrade`` option picks them (HTTP/1.1, ``GET``, no request
body, ``line-echo`` among the offered protocols). Every other request,
WebSocket upgrades and plain requests alike, goes to the small WSGI app, which
answers ``426 Upgrade Required`` with ``Upgrade: line-echo`` and
``Connection: Upgrade, close``, as node:http passes upgrades that no listener
takes to its request handler.

A line longer than ``--max-line`` bytes, or ``--idle-timeout`` seconds of
silence, closes the connection. When the client ends its side, the server
ends its own once it has echoed every complete line (an unterminated last
line is dropped).

Run: python examples/upgrade_line_echo.py --host 127.0.0.1 --port 9002
"""

from __future__ import annotations

import argparse
import signal
import socket as _socket
from typing import Any

import gevent
from werkzeug.wrappers import Request

from takeover import create_server
from takeover.protocol.handshake import header_tokens
from takeover.server import format_address

PROTOCOL = "line-echo"
SWITCHING = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: line-echo\r\n"
    b"Connection: Upgrade\r\n"
    b"\r\n"
)


def wants_line_echo(request: Request) -> bool:
    """``should_upgrade``: only line-echo upgrades go to the ``upgrade`` event.

    The server asks this only for requests whose ``Connection`` lists
    ``upgrade``. A request with content is left to the app: its body would be
    read as the first lines of the new protocol.
    """
    environ = request.environ
    offered = [token.lower() for token in header_tokens(request.headers.get("Upgrade", ""))]
    return (
        PROTOCOL in offered
        and environ.get("SERVER_PROTOCOL") == "HTTP/1.1"  # HTTP/1.0 must ignore Upgrade
        and request.method == "GET"
        and not request.content_length
        and "HTTP_TRANSFER_ENCODING" not in environ
    )


def http_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Everything that is not a line-echo upgrade: say which protocol to ask for."""
    body = b"this server speaks line-echo: send GET with Upgrade: line-echo, Connection: Upgrade\n"
    start_response("426 Upgrade Required", [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(body))),
        ("Upgrade", PROTOCOL),
        # Upgrade must be listed in Connection (RFC 9110 §7.8); a second field
        # adds "close" (gevent closes on a Connection field that is exactly
        # "close"): a declined upgrade may be followed by bytes of the other
        # protocol, which must not be read as a next request.
        ("Connection", "Upgrade"),
        ("Connection", "close"),
    ])
    return [body]


def echo_lines(sock: Any, head: bytes, max_line: int, idle_timeout: float | None) -> None:
    """The line-echo session: answer 101, then send back each complete line, ``head`` first."""
    pending = b""
    try:
        sock.settimeout(idle_timeout)
        sock.sendall(SWITCHING)
        data = head
        while True:
            *lines, pending = (pending + data).split(b"\n")
            too_long = [index for index, line in enumerate(lines) if len(line) > max_line]
            if too_long:
                lines = lines[: too_long[0]]
            if lines:
                sock.sendall(b"".join(line + b"\n" for line in lines))
            if too_long or len(pending) > max_line:
                return  # a line too long: give up on this client
            data = sock.recv(65536)
            if not data:
                sock.shutdown(_socket.SHUT_WR)  # the client is done; so are we
                return
    except OSError:  # reset, or idle too long (socket.timeout is an OSError)
        return
    finally:
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9002)
    parser.add_argument("--max-line", type=int, default=64 * 1024, help="bytes per line (default 64 KiB)")
    parser.add_argument("--idle-timeout", type=float, default=300, help="seconds; 0 disables")
    args = parser.parse_args()
    idle_timeout = args.idle_timeout or None

    server = create_server(http_app, should_upgrade=wants_line_echo)

    def on_upgrade(request: Request, socket: Any, head: bytes) -> None:
        # The listener owns the socket now: serve it in its own greenlet, as a
        # Node listener would attach handlers and return.
        gevent.spawn(echo_lines, socket, head, args.max_line, idle_timeout)

    server.on("upgrade", on_upgrade)
    server.listen(args.port, args.host)
    address = format_address(*server.address)
    print(f"line-echo listening on http://{address}/ (Upgrade: {PROTOCOL})", flush=True)
    server.serve_forever(close_on=(signal.SIGINT, signal.SIGTERM))


if __name__ == "__main__":
    main()
