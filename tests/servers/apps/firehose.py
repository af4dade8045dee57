"""A server that sends to clients as fast as it can, for the slow-consumer tests.

``/broadcast`` sends 64 KiB messages with :func:`takeover.broadcast` (which
never waits), ``/send`` with ``WebSocket.send`` (which waits at the high-water
mark). Each connection gets up to ``--megabytes`` MiB; when it ends, one line
reports what happened and how far this process's RSS rose above its level
before the connection opened:

    done path=/broadcast code=1008 sent=... timeouts=... rss_growth_kib=...
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import gevent

from takeover import WebSocket, broadcast, create_server, upgrade_websocket

MESSAGE = b"x" * (64 * 1024)
PAGE_KIB = 4


def rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_KIB


def firehose(ws: WebSocket, path: str, megabytes: int) -> None:
    start = peak = rss_kib()
    sent = timeouts = 0
    codes: list[int] = []
    ws.add_event_listener("close", lambda event: codes.append(event.code))
    for _ in range(megabytes * 16):
        if ws.ready_state != WebSocket.OPEN:
            break
        if path == "/broadcast":
            if not broadcast([ws], MESSAGE):
                break
            gevent.sleep(0)  # let the writer run, as a real broadcaster between messages would
        else:
            try:
                ws.send(MESSAGE)
            except TimeoutError:
                timeouts += 1
                ws.close(1008, "too slow")
                break
        sent += 1
        peak = max(peak, rss_kib())
    ws.wait_closed(30)
    print(
        f"done path={path} code={codes[0] if codes else None} sent={sent}"
        f" timeouts={timeouts} rss_growth_kib={peak - start}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--no-limit", action="store_true", help="max_buffered_amount=None")
    parser.add_argument("--send-timeout", type=float, default=1.0)
    args = parser.parse_args()
    server = create_server()
    limit: dict[str, Any] = {"max_buffered_amount": None} if args.no_limit else {}

    def on_upgrade(request: Any, sock: Any, head: bytes) -> None:
        ws, _ = upgrade_websocket(
            request, socket=sock, head=head, idle_timeout=None, send_timeout=args.send_timeout,
            close_timeout=2, **limit,
        )
        gevent.spawn(firehose, ws, request.path, args.megabytes)

    server.on("upgrade", on_upgrade)
    server.listen(args.port, args.host)
    print(f"listening on {server.url}", flush=True)
    server.serve_forever(close_on=(signal.SIGTERM,))
    sys.exit(0)


if __name__ == "__main__":
    main()
