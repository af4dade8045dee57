"""The ``websockets`` asyncio server (default asyncio event loop), echo, max_size=None.

    python -m bench.servers.websockets_echo --port P [--broadcast]

Broadcast uses ``websockets.asyncio.server.broadcast``, the library's own helper
(it writes to every connection without awaiting each one).
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from websockets.asyncio.server import broadcast, serve

from bench.servers._common import BROADCAST_MESSAGE, broadcast_count, parse_args


async def echo(ws: Any) -> None:
    async for message in ws:
        await ws.send(message)


async def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    server_ref: list[Any] = []

    async def broadcaster(ws: Any) -> None:
        async for message in ws:
            count = broadcast_count(message)
            if count is None:
                await ws.send(message)
                continue
            for _ in range(count):
                broadcast(server_ref[0].connections, BROADCAST_MESSAGE)

    handler = broadcaster if args.broadcast else echo
    async with serve(handler, args.host, args.port, max_size=None) as server:
        server_ref.append(server)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, server.close)
        print(f"websockets echo server listening on ws://{args.host}:{args.port}/", flush=True)
        await server.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())
