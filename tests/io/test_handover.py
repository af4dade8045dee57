"""The handover to takeover's I/O thread, in this process: swap_out, the loop, the listener pool.

No server here: a plain socket pair stands for a threaded server's connection,
and the test's thread for its request thread.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder

from takeover import upgrade_websocket
from takeover._io import handover
from takeover._io.handover import swap_out
from takeover._io.listeners import ListenerPool, Mailbox
from takeover._io.loop import io_loop
from takeover.events import MessageEvent
from tests.clients import RawClient
from tests.frames import client_frame

TEXT, CLOSE = 0x1, 0x8
HEADERS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def test_swap_out_moves_the_connection_and_leaves_a_dead_socket() -> None:
    server_side, client = socket.socketpair()
    moved = swap_out(server_side.fileno())
    # What the server does with its descriptor now touches nothing the client sees.
    server_side.shutdown(socket.SHUT_RDWR)
    assert server_side.recv(10) == b""
    with pytest.raises(OSError):
        server_side.sendall(b"stray bytes from the server")
    server_side.close()
    client.sendall(b"to the new owner")
    assert moved.recv(100) == b"to the new owner"
    moved.sendall(b"from the new owner")
    assert client.recv(100) == b"from the new owner"
    moved.close()
    assert client.recv(10) == b""


def test_the_loop_runs_calls_from_other_threads_in_its_own() -> None:
    loop = io_loop()
    seen: list[int | None] = []
    done = threading.Event()
    loop.call_soon_threadsafe(lambda: (seen.append(threading.get_ident()), done.set()))
    assert done.wait(5)
    assert seen == [loop.ident] and loop.ident != threading.get_ident()
    assert loop.run_sync(lambda x: x * 2, 21, timeout=5) == 42


class _Target:
    """A stand-in WebSocket for the pool: records who dispatched what."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []
        self._listeners: dict[str, Any] = {"message": [self.dispatch_event]}  # it listens to messages
        self._handlers: dict[str, Any] = {}
        self.changed = threading.Condition()
        self.gate: threading.Event | None = None

    def dispatch_event(self, event: Any) -> None:
        if event.data == "block":
            time.sleep(0.5)  # the listener that blocks, as a query would
        if self.gate is not None:
            assert self.gate.wait(5)
        with self.changed:
            self.seen.append((threading.current_thread().name, event.data))
            self.changed.notify_all()

    def wait_for(self, count: int, timeout: float = 5) -> list[Any]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.seen) >= count, timeout), self.seen
            return [data for _, data in self.seen]


def post_from_loop(mailbox: Mailbox, *events: Any) -> None:
    io_loop().run_sync(lambda: [mailbox.post(event) for event in events], timeout=5)


def test_one_websockets_events_run_in_order_and_another_is_not_held_up() -> None:
    pool, loop = ListenerPool(4), io_loop()
    slow, fast = _Target(), _Target()
    slow_box, fast_box = Mailbox(slow, pool, loop), Mailbox(fast, pool, loop)  # type: ignore[arg-type]
    post_from_loop(slow_box, MessageEvent("block"), *(MessageEvent(str(n)) for n in range(5)))
    started = time.monotonic()
    post_from_loop(fast_box, MessageEvent("quick"))
    assert fast.wait_for(1) == ["quick"]
    assert time.monotonic() - started < 0.4, "a blocked WebSocket held another one up"
    assert slow.wait_for(6) == ["block", "0", "1", "2", "3", "4"]


def test_a_full_mailbox_pauses_its_reader_until_the_pool_catches_up() -> None:
    pool, loop = ListenerPool(1), io_loop()
    target = _Target()
    gate = target.gate = threading.Event()
    mailbox = Mailbox(target, pool, loop, limit=4)  # type: ignore[arg-type]
    paused_seen = threading.Event()
    finished = threading.Event()

    def reader() -> None:  # the loop's reader posting messages
        for n in range(8):
            mailbox.post(MessageEvent(str(n)))
        finished.set()

    loop.call_soon_threadsafe(reader)
    for _ in range(400):  # a state of the loop's reader: nothing to wait on but a look
        if mailbox.paused:
            paused_seen.set()
            break
        time.sleep(0.005)
    assert paused_seen.is_set(), "the reader did not pause at the limit"
    assert not finished.is_set()
    gate.set()
    assert finished.wait(5), "the reader did not resume"
    assert target.wait_for(8) == [str(n) for n in range(8)]


def attach_pair(
    ws: Any, ours: socket.socket, theirs: socket.socket, head: bytes, claimed: bool = False
) -> RawClient:
    """Hand ``ours`` and ``head`` to ``ws`` as a threaded server would; client on ``theirs``, past its 101."""
    if not claimed:
        handover.claim(ws)
    handover.attach(ws, ours, head)
    client = RawClient(0, connect=lambda *args, **kwargs: theirs)
    assert client.read_response()[0] == 101
    return client


def test_a_handed_over_websocket_echoes_from_a_listener_thread() -> None:
    ours, theirs = socket.socketpair()
    environ = EnvironBuilder(path="/h", headers=HEADERS).get_environ()
    ws, _ = upgrade_websocket(environ)
    threads: list[str] = []

    def on_message(event: Any) -> None:
        threads.append(threading.current_thread().name)
        ws.send(event.data)

    ws.onmessage = on_message
    closed = threading.Event()
    ws.onclose = lambda event: closed.set()
    client = attach_pair(ws, ours, theirs, client_frame(TEXT, b"in the head"))
    assert client.read_frame() == (TEXT, True, b"in the head")
    client.send(client_frame(TEXT, b"again"))
    assert client.read_frame() == (TEXT, True, b"again")
    assert threads and all(name.startswith("takeover-listener") for name in threads)
    with pytest.raises(TimeoutError):  # messages go to the listener, none to receive()
        ws.receive(timeout=0.2)
    client.send(client_frame(CLOSE, (1000).to_bytes(2, "big")))
    assert client.read_close() == (1000, "")
    assert closed.wait(5)
    assert ws.wait_closed(5)


def test_receive_and_send_from_a_thread_of_the_application() -> None:
    """A blocking reader in a thread of its own: the connection lives in the I/O loop, the
    thread reads with receive() and writes with send(), and the close ends its loop."""
    ours, theirs = socket.socketpair()
    ws, _ = upgrade_websocket(EnvironBuilder(path="/b", headers=HEADERS).get_environ())
    handover.claim(ws)
    seen: list[Any] = []
    ended = threading.Event()

    def blocking() -> None:
        try:
            for message in ws:
                seen.append((threading.current_thread().name, message))
                ws.send(message.upper())
        finally:
            ended.set()

    reader = threading.Thread(target=blocking, name="app-reader", daemon=True)
    reader.start()
    client = attach_pair(ws, ours, theirs, client_frame(TEXT, b"first"), claimed=True)
    assert client.read_frame() == (TEXT, True, b"FIRST")
    client.send(client_frame(TEXT, b"second"))
    assert client.read_frame() == (TEXT, True, b"SECOND")
    assert ws.session.loop.ident != threading.get_ident()
    client.send(client_frame(CLOSE, (1000).to_bytes(2, "big")))
    assert client.read_close() == (1000, "")
    assert ended.wait(5), "the reader's loop did not end at the close"
    assert seen == [("app-reader", "first"), ("app-reader", "second")]


def test_a_first_receive_after_the_close_raises_at_once() -> None:
    """receive() first called once the WebSocket is CLOSED (its queue never made) ends at once."""
    from takeover import ConnectionClosed

    ours, theirs = socket.socketpair()
    ws, _ = upgrade_websocket(EnvironBuilder(path="/late", headers=HEADERS).get_environ())
    ws.onmessage = lambda event: None  # nothing queued for receive(): no queue made while open
    client = attach_pair(ws, ours, theirs, b"")
    client.send(client_frame(CLOSE, (4000).to_bytes(2, "big")))
    assert client.read_close() == (4000, "")
    assert ws.wait_closed(5)
    started = time.monotonic()
    with pytest.raises(ConnectionClosed) as closed:
        ws.receive(timeout=5)
    assert closed.value.code == 4000 and time.monotonic() - started < 1
