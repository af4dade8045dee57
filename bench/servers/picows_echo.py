"""picows on uvloop: a frame-level echo (the client never fragments), for reference.

    python -m bench.servers.picows_echo --port P [--broadcast]

Broadcast loops over the connected transports, one ``send`` (one frame) per client.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

from bench.servers._common import BROADCAST_MESSAGE, BROADCAST_PREFIX, parse_args

MESSAGE = BROADCAST_MESSAGE.encode()
PREFIX = BROADCAST_PREFIX.encode()
transports: set[WSTransport] = set()


class Echo(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
        elif frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY):
            transport.send(frame.msg_type, frame.get_payload_as_memoryview())


class Broadcast(Echo):
    def on_ws_connected(self, transport: WSTransport) -> None:
        transports.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        transports.discard(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            payload = frame.get_payload_as_bytes()
            if payload.startswith(PREFIX):
                for _ in range(int(payload[len(PREFIX) :])):
                    for client in transports:
                        client.send(WSMsgType.TEXT, MESSAGE)
                return
        super().on_ws_frame(transport, frame)


async def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    listener: Any = Broadcast if args.broadcast else Echo
    server = await ws_create_server(
        lambda request: listener(), args.host, args.port, max_frame_size=64 * 1024 * 1024
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"picows echo server listening on ws://{args.host}:{args.port}/", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    uvloop.run(main())
