"""The soak test's server: examples/echo.py's upgrade listener, plus a /stats page.

    python -m soak.server --port P

GET /stats answers JSON with this process's open file descriptors, live
greenlets, open WebSockets and RSS, so the soak driver can check that all of
them come back after the connections close.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import signal
from typing import Any

from greenlet import greenlet

import takeover.protocol.connection as connection
from takeover import create_server, upgrade_websocket
from takeover._io.registry import DEFAULT_REGISTRY


def _trim() -> None:
    # Hand freed heap back to the OS (glibc), so RSS shows what is in use
    # rather than the high-water mark of 5,000 connections.
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def stats() -> dict[str, int]:
    """What the soak checks: fds, greenlets, OS threads, WebSockets, RSS in KB."""
    gc.collect()
    _trim()
    with open(f"/proc/{os.getpid()}/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    rss = int(fields["VmRSS"].split()[0])
    return {
        "fds": len(os.listdir(f"/proc/{os.getpid()}/fd")),
        "greenlets": sum(1 for obj in gc.get_objects() if isinstance(obj, greenlet)),
        "threads": int(fields["Threads"]),
        "websockets": len(DEFAULT_REGISTRY.open_websockets()),
        "objects": len(gc.get_objects()),
        "rss_kb": rss,
    }


def keep_every_payload(kept: list[Any]) -> None:
    """Make the core keep each frame's unmasked payload: an object per fragment, as before the fix."""
    unmask = connection.apply_mask

    def apply_mask(data: Any, mask: Any) -> bytes:
        payload = unmask(data, mask)
        kept.append(payload)
        return payload

    connection.apply_mask = apply_mask


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = json.dumps(stats()).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--leak", action="store_true",
        help="keep every WebSocket and 256 KiB per connection "
        "(tests/interop/test_soak.py: the checks must fail)",
    )
    parser.add_argument(
        "--leak-fragments", action="store_true",
        help="keep every frame's payload as its own object (tests/test_soak.py: the flood check must fail)",
    )
    args = parser.parse_args()
    server = create_server(app)
    leaked: list[Any] = []
    if args.leak_fragments:
        keep_every_payload(leaked)

    def on_upgrade(request: Any, socket: Any, head: bytes) -> None:
        ws, _ = upgrade_websocket(request, socket=socket, head=head)
        ws.onmessage = lambda event: ws.send(event.data)
        if args.leak:
            leaked.append((ws, bytearray(256 * 1024)))

    server.on("upgrade", on_upgrade)
    server.listen(args.port, args.host)
    print(f"soak server listening on {server.url}", flush=True)
    server.serve_forever(close_on=(signal.SIGINT, signal.SIGTERM))


if __name__ == "__main__":
    main()
