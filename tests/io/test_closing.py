"""The close table (takeover._io.session.CLOSINGS): one test per reason, checked on the wire.

Each test drives a real session over a gevent socketpair with a raw peer, and
checks the bytes the peer reads (the close frame and its code, the end of the
stream) and the events the application sees, in order.
"""

from __future__ import annotations

import gc
import threading
from typing import Any

import gevent
import gevent.event
import gevent.socket
import pytest
from werkzeug.test import EnvironBuilder

from takeover import broadcast, upgrade_websocket
from takeover._io.closing import (
    CLOSINGS,
    IDLE_TIMEOUT_REASON,
    INTERNAL_ERROR_REASON,
    NO_CLOSE_FRAME,
    NOT_RETURNED,
    OVERFLOW_REASON,
    Reason,
)
from takeover._io.registry import REGISTRY_KEY, Registry
from takeover.protocol.connection import Connection
from takeover.websocket import WebSocket
from tests.clients import RawClient
from tests.frames import client_frame

TEXT, CLOSE, PING = 0x1, 0x8, 0x9
HEADERS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


class Peer:
    """The WebSocket, its events as (type, details), and a raw client on the other end."""

    def __init__(self, registry: Registry | None = None, **options: Any) -> None:
        ours, theirs = gevent.socket.socketpair()
        environ = EnvironBuilder(path="/closing", headers=HEADERS).get_environ()
        if registry is not None:
            environ[REGISTRY_KEY] = registry
        self.events: list[tuple[str, Any]] = []
        self.closed = gevent.event.Event()
        self.ws, _ = upgrade_websocket(environ, socket=ours, **options)
        self.ws.add_event_listener("open", lambda event: self.events.append(("open", None)))
        self.ws.add_event_listener("message", lambda event: self.events.append(("message", event.data)))
        self.ws.add_event_listener("error", lambda event: self.events.append(("error", event.message)))
        self.ws.add_event_listener("close", self._on_close)
        self.client = RawClient(0, connect=lambda *args, **kwargs: theirs)
        assert self.client.read_response()[0] == 101

    def _on_close(self, event: Any) -> None:
        self.events.append(("close", (event.code, event.reason, event.was_clean)))
        self.closed.set()

    def send_close(self, code: int, reason: bytes = b"") -> None:
        self.client.send(client_frame(CLOSE, code.to_bytes(2, "big") + reason))

    def wait_closed(self, timeout: float = 5) -> list[tuple[str, Any]]:
        assert self.closed.wait(timeout), f"no close event; events so far: {self.events}"
        return self.events


def test_every_reason_has_one_row_and_only_local_closes_leave_the_session_running() -> None:
    assert set(CLOSINGS) == set(Reason)
    assert {reason for reason, row in CLOSINGS.items() if not row.ends} == {
        Reason.LOCAL_CLOSE,
        Reason.SHUTDOWN,
    }


def test_local_close_sends_ours_then_ends_with_the_peers_answer() -> None:
    peer = Peer()
    peer.ws.close(4000, "bye")
    assert peer.ws.ready_state is WebSocket.CLOSING
    assert peer.client.read_close() == (4000, "bye")
    peer.send_close(4000)
    assert peer.wait_closed() == [("open", None), ("close", (4000, "", True))]
    assert peer.client.at_eof(), "the server closes TCP after the close handshake (§7.1.1)"


def test_shutdown_sends_1001_to_every_websocket_of_the_registry() -> None:
    registry = Registry()
    peers = [Peer(registry), Peer(registry)]
    assert len(registry) == 2
    stopper = gevent.spawn(registry.close_all, 1001, "Server shutting down", 5)
    for peer in peers:
        assert peer.client.read_close() == (1001, "Server shutting down")
        peer.send_close(1001)
    stopper.get(timeout=5)
    for peer in peers:
        assert peer.wait_closed()[-1] == ("close", (1001, "", True))
    assert len(registry) == 0


def test_shutdown_reaches_a_websocket_registered_after_it_began() -> None:
    registry = Registry()
    registry.close_all(1001, "Server shutting down", 0.1)  # nothing open yet
    late = Peer(registry)
    assert late.client.read_close() == (1001, "Server shutting down")
    late.send_close(1001)
    assert late.wait_closed()[-1] == ("close", (1001, "", True))


def test_peer_close_is_echoed_and_the_server_closes_tcp_first() -> None:
    peer = Peer()
    peer.send_close(1000, b"done")
    assert peer.client.read_close() == (1000, "")  # §5.5.1: the echo repeats the code
    assert peer.client.at_eof()
    assert peer.wait_closed() == [("open", None), ("close", (1000, "done", True))]


def test_failure_sends_the_code_then_lingers_for_the_peers_close() -> None:
    peer = Peer(close_timeout=5)
    peer.client.send(client_frame(TEXT, b"unmasked", mask=None))  # §5.1: 1002
    assert peer.client.read_close() == (1002, "Client frames must be masked")
    # The server half-closed (FIN after its close frame) and still reads: the
    # frames the peer sends meanwhile are skipped until its close arrives.
    assert peer.client.at_eof(timeout=5)
    assert not peer.closed.is_set(), "the session ended before the peer answered"
    peer.client.send(client_frame(TEXT, b"skipped") + client_frame(CLOSE, (1002).to_bytes(2, "big")))
    assert peer.wait_closed() == [
        ("open", None),
        ("error", "Client frames must be masked"),
        ("close", (1002, "Client frames must be masked", False)),
    ]


def test_overflow_closes_with_1008_behind_the_frame_in_flight() -> None:
    peer = Peer(max_buffered_amount=1000, high_water_mark=None, close_timeout=5)
    message = b"x" * (1 << 20)
    for _ in range(4):  # the peer reads nothing meanwhile: the second queues past the limit
        broadcast([peer.ws], message)
    assert peer.ws.ready_state is WebSocket.CLOSING
    assert peer.wait_closed() == [
        ("open", None),
        ("error", OVERFLOW_REASON),
        ("close", (1008, OVERFLOW_REASON, False)),
    ]
    opcode, _, payload = peer.client.read_frame()
    assert (opcode, len(payload)) == (0x2, len(message)), "the frame in flight is written whole"
    assert peer.client.read_close() == (1008, OVERFLOW_REASON)
    assert peer.client.at_eof()


def test_eof_without_a_close_frame_is_1006_with_an_error() -> None:
    peer = Peer()
    peer.client.close()
    assert peer.wait_closed() == [("open", None), ("error", NO_CLOSE_FRAME), ("close", (1006, "", False))]


def test_eof_after_our_close_is_1006_without_an_error() -> None:
    peer = Peer()
    peer.ws.close(1000)
    assert peer.client.read_close() == (1000, "")
    peer.client.close()
    assert peer.wait_closed() == [("open", None), ("close", (1006, "", False))]


def test_idle_timeout_pings_then_closes_with_1001() -> None:
    peer = Peer(idle_timeout=0.4)
    opcode, _, _ = peer.client.read_frame()
    assert opcode == PING  # after half the idle timeout of silence
    assert peer.client.read_close() == (1001, IDLE_TIMEOUT_REASON)
    assert peer.client.at_eof()
    assert peer.wait_closed() == [
        ("open", None),
        ("error", IDLE_TIMEOUT_REASON),
        ("close", (1001, IDLE_TIMEOUT_REASON, False)),
    ]


def test_close_timeout_ends_an_unanswered_close_with_1006() -> None:
    peer = Peer(close_timeout=0.3)
    peer.ws.close(1000)
    assert peer.client.read_close() == (1000, "")
    assert peer.client.at_eof(timeout=5), "TCP was not closed after close_timeout"
    assert peer.wait_closed() == [("open", None), ("close", (1006, "", False))]


def test_internal_error_closes_with_1011_without_details(monkeypatch: pytest.MonkeyPatch) -> None:
    peer = Peer()

    def broken(self: Connection, data: bytes = b"") -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Connection, "receive_data", broken)
    # The read loop bound receive_data when it started: a parked reader's new
    # greenlet binds it anew, so wait for the park (the loop is then restarted).
    for _ in range(200):
        transport: Any = peer.ws.session.transport
        if transport._parked:
            break
        gevent.sleep(0.01)
    peer.client.send(client_frame(TEXT, b"boom"))
    assert peer.client.read_close() == (1011, INTERNAL_ERROR_REASON)
    assert peer.wait_closed() == [
        ("open", None),
        ("error", INTERNAL_ERROR_REASON),
        ("close", (1011, INTERNAL_ERROR_REASON, False)),
    ]


def test_an_upgrade_response_never_returned_is_abandoned_with_1006() -> None:
    environ = EnvironBuilder(path="/closing", headers=HEADERS).get_environ()
    ws, response = upgrade_websocket(environ)
    events: list[tuple[str, Any]] = []
    ws.add_event_listener("error", lambda event: events.append(("error", event.message)))
    closed = threading.Event()
    ws.add_event_listener("close", lambda event: events.append(("close", (event.code, event.was_clean))))
    ws.add_event_listener("close", lambda event: closed.set())
    environ.clear()  # the environ held the pending WebSocket, not the response
    del response
    gc.collect()
    # Made in this plain thread, it lives in the I/O loop: its listeners run in that loop's threads.
    assert closed.wait(5)
    assert events == [("error", NOT_RETURNED), ("close", (1006, False))]
    assert ws.ready_state is WebSocket.CLOSED
