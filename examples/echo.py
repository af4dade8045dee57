"""Echo server: the seed's node:http example, in Python.

    const server = http.createServer();
    server.on("upgrade", (req, socket, head) => {
      const { socket: ws } = Deno.upgradeWebSocket(req, { socket, head });
      ws.onmessage = (e) => ws.send(e.data);
    });

Run: python examples/echo.py --host 127.0.0.1 --port 9001 [--idle-timeout 30] [--protocol NAME]
                              [--compression deflate [--compression-level N]
                              [--compression-threshold BYTES]]
Text is echoed as text and binary as binary, on any path. With --protocol, the
server answers with that subprotocol when the client offers it. With
--compression deflate, it accepts permessage-deflate (RFC 7692) from clients
that offer it.
"""

from __future__ import annotations

import argparse
import signal
from typing import Any

from takeover import DeflateOptions, create_server, upgrade_websocket
from takeover.protocol.handshake import header_tokens


def http_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answer plain HTTP requests: this server only speaks WebSocket."""
    body = b"takeover echo server: connect with a WebSocket client\n"
    start_response("426 Upgrade Required", [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(body))),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
    ])
    return [body]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--idle-timeout", type=float, default=30, help="seconds; 0 disables")
    parser.add_argument("--protocol", help="subprotocol to choose when the client offers it")
    parser.add_argument("--compression", choices=["deflate"], help="accept permessage-deflate")
    parser.add_argument("--compression-level", type=int, default=-1, help="zlib's level, -1 or 0-9")
    parser.add_argument(
        "--compression-threshold", type=int, help="send smaller messages uncompressed (default: as ws)"
    )
    args = parser.parse_args()
    compression = None
    if args.compression:
        compression = DeflateOptions(level=args.compression_level, threshold=args.compression_threshold)

    server = create_server(http_app)

    def on_upgrade(request: Any, socket: Any, head: bytes) -> None:
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        protocol = args.protocol if args.protocol in header_tokens(offered) else None
        ws, _ = upgrade_websocket(
            request,
            socket=socket,
            head=head,
            protocol=protocol,
            idle_timeout=args.idle_timeout,
            compression=compression,
        )
        ws.onmessage = lambda event: ws.send(event.data)

    server.on("upgrade", on_upgrade)
    server.listen(args.port, args.host)
    print(f"echo server listening on {server.url}", flush=True)
    server.serve_forever(close_on=(signal.SIGINT, signal.SIGTERM))


if __name__ == "__main__":
    main()
