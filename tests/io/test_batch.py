"""``takeover._io.batch.Batch``: what the hub's subscriber read together leaves in one write per member.

Real WebSockets over gevent socketpairs (socket mode): messages added to a
batch reach nobody until the flush, then each member gets all of them, in
order, from one write of its session (counted on the session's send path);
a member with its own compressor (context takeover) is written at once.
"""

from __future__ import annotations

from collections.abc import Callable

import gevent
import gevent.socket
import pytest
from werkzeug.test import EnvironBuilder

from takeover import upgrade_websocket
from takeover._io.batch import Batch
from takeover._io.session import Session
from takeover.websocket import WebSocket

HEADERS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def count_writes(
    monkeypatch: pytest.MonkeyPatch, measure: Callable[[bytes, int], int]
) -> dict[Session, list[int]]:
    """Each session's writes through its one send path, counted on the class: ``measure(the
    bytes written or the payload to frame, how many messages)`` of each, in order."""
    counted: dict[Session, list[int]] = {}
    write = Session.write

    def counting(
        self: Session, opcode: int, payload: bytes, frame: bytes | None = None, messages: int = 1
    ) -> bool:
        counted.setdefault(self, []).append(measure(frame or payload, messages))
        return write(self, opcode, payload, frame, messages)

    monkeypatch.setattr(Session, "write", counting)
    return counted


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> dict[Session, list[int]]:
    """Each session's writes through its one send path: their sizes."""
    return count_writes(monkeypatch, lambda data, messages: len(data))


def member(extensions: str | None = None) -> tuple[WebSocket, gevent.socket.socket]:
    """A WebSocket and its peer's socket, past the 101."""
    headers = dict(HEADERS)
    if extensions:
        headers["Sec-WebSocket-Extensions"] = extensions
    ours, theirs = gevent.socket.socketpair()
    environ = EnvironBuilder(path="/", headers=headers).get_environ()
    compression = "deflate" if extensions else None
    ws, _ = upgrade_websocket(environ, socket=ours, idle_timeout=None, compression=compression)
    head = b""
    while b"\r\n\r\n" not in head:
        head += theirs.recv(4096)
    return ws, theirs


def received(peer: gevent.socket.socket, size: int, timeout: float = 5.0) -> bytes:
    data = b""
    with gevent.Timeout(timeout):
        while len(data) < size:
            data += peer.recv(65536)
    return data


def nothing_yet(peer: gevent.socket.socket) -> bool:
    peer.settimeout(0.05)  # a bounded look: the flush below is the event that sends
    try:
        return not peer.recv(1)
    except TimeoutError:
        return True
    finally:
        peer.settimeout(None)


def test_held_until_the_flush_then_one_write_per_member_in_order(writes: dict[Session, list[int]]) -> None:
    members = [member() for _ in range(3)]
    websockets = tuple(ws for ws, _ in members)
    gevent.sleep(0)  # the sessions open
    batch = Batch()
    for n in range(5):
        batch.add(websockets, f"m{n}")
    assert batch and all(nothing_yet(peer) for _, peer in members)
    batch.flush()
    frames = b"".join(bytes([0x81, 2]) + f"m{n}".encode() for n in range(5))
    for ws, peer in members:
        assert received(peer, len(frames)) == frames  # five frames, in order
        assert writes[ws.session] == [len(frames)]  # in one write
        ws.close()
    assert not batch


def test_a_member_with_its_own_compressor_is_written_at_once(writes: dict[Session, list[int]]) -> None:
    ws, peer = member("permessage-deflate")
    gevent.sleep(0)
    assert ws.extensions.startswith("permessage-deflate")
    batch = Batch()
    batch.add((ws,), "x" * 2000)  # over the compression threshold: its compressor, its turn, now
    assert writes[ws.session] and peer.recv(65536)[0] == 0xC1  # FIN, RSV1 (compressed), text
    batch.flush()
    assert len(writes[ws.session]) == 1
    ws.close()
