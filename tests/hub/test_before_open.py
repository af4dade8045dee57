"""Joining before the WebSocket opens: what the room gets meanwhile waits for it, within bounds.

In process: a ``memory://`` hub, a WebSocket from ``upgrade_websocket`` in
response mode (CONNECTING, as in a view), then a socket attached to it as a
server adapter does when the view returns; the client end of the pair reads
what goes out.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from werkzeug.test import EnvironBuilder

from takeover import Hub, WebSocket, upgrade_websocket
from tests.clients import RawClient

TEXT, CLOSE = 0x1, 0x8
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


@pytest.fixture
def hub() -> Iterator[Hub]:
    made = Hub("memory://")
    yield made
    made.close()
    _responses.clear()


_responses: list[object] = []  # a response dropped unreturned abandons its WebSocket: keep them


def pending_websocket(**options: object) -> WebSocket:
    environ = EnvironBuilder(
        path="/ws",
        headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": KEY,
                 "Sec-WebSocket-Version": "13"},
    ).get_environ()
    ws, response = upgrade_websocket(environ, **options)  # type: ignore[arg-type]
    _responses.append(response)
    return ws


def open_it(ws: WebSocket) -> RawClient:
    """Attach a socket, as a server does once the view returned; the client end, past the 101."""
    server_end, client_end = socket.socketpair()
    client = RawClient.__new__(RawClient)
    client.sock, client.buffer = client_end, b""
    client_end.settimeout(10)
    ws.session.attach(server_end, b"")
    assert client.read_response()[0] == 101
    return client


def test_messages_published_before_open_arrive_after_it_in_order(hub: Hub) -> None:
    ws = pending_websocket()
    assert ws.ready_state is WebSocket.CONNECTING
    assert hub.join(ws, "early")
    for n in range(5):
        hub.publish("early", f"m{n}")
    client = open_it(ws)
    received = [client.read_frame() for _ in range(5)]
    assert received == [(TEXT, True, f"m{n}".encode()) for n in range(5)]
    hub.publish("early", "after")
    assert client.read_frame() == (TEXT, True, b"after")
    client.close()


def test_since_replays_before_what_came_while_connecting(hub: Hub) -> None:
    offsets = [hub.publish("replay", f"old{n}").offset for n in range(3)]
    ws = pending_websocket()
    assert hub.join(ws, "replay", since=offsets[0])
    hub.publish("replay", "while connecting")
    client = open_it(ws)
    got = [client.read_frame()[2] for _ in range(3)]
    assert got == [b"old1", b"old2", b"while connecting"]
    client.close()


def test_more_than_max_buffered_amount_before_open_closes_it_1008(hub: Hub) -> None:
    ws = pending_websocket(max_buffered_amount=100_000)
    other = pending_websocket()
    assert hub.join(ws, "flood") and hub.join(other, "flood")
    for _ in range(30):
        hub.publish("flood", "x" * 10_000)  # 300 kB queued for a member that is not open yet
    client = open_it(ws)
    opcode, _, payload = client.read_frame()
    assert (opcode, int.from_bytes(payload[:2], "big")) == (CLOSE, 1008)
    client.close()  # no close frame back: the server sees the end of the stream
    assert ws.wait_closed(10) and hub.rooms(ws) == frozenset()  # and it is out of the room
    fine = open_it(other)  # the other member's queue was its own
    assert [fine.read_frame()[2] for _ in range(30)] == [b"x" * 10_000] * 30
    fine.close()
