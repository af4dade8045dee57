"""takeover in socket mode (the ``upgrade`` event), broadcast variant of examples/echo.py.

    python -m bench.servers.takeover_socket_broadcast --port P

Same server as ``examples/echo.py --idle-timeout 30``; a ``broadcast:<n>`` text message
calls ``takeover.broadcast(clients, message)`` n times, which frames the message once
per call and writes those bytes to every open client.
"""

from __future__ import annotations

import signal
from typing import Any

from bench.servers._common import BROADCAST_MESSAGE, broadcast_count, parse_args
from takeover import broadcast, create_server, upgrade_websocket


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    clients: set[Any] = set()
    server = create_server()

    def on_upgrade(request: Any, socket: Any, head: bytes) -> None:
        ws, _ = upgrade_websocket(request, socket=socket, head=head, idle_timeout=30)
        clients.add(ws)

        def on_message(event: Any) -> None:
            count = broadcast_count(event.data)
            if count is None:
                ws.send(event.data)
                return
            for _ in range(count):
                broadcast(clients, BROADCAST_MESSAGE)

        ws.onmessage = on_message
        ws.onclose = lambda event: clients.discard(ws)

    server.on("upgrade", on_upgrade)
    server.listen(args.port, args.host)
    print(f"takeover broadcast server listening on {server.url}", flush=True)
    server.serve_forever(close_on=(signal.SIGINT, signal.SIGTERM))


if __name__ == "__main__":
    main()
