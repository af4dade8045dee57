"""Backpressure: an exact ``buffered_amount``, ``send()`` waiting at the
high-water mark, and peers that stop reading closed with 1008 at
``max_buffered_amount`` instead of growing the server's memory.

The server's RSS under a peer that reads nothing, measured on a server run as
a process, is tests/servers/test_backpressure_rss.py."""

from __future__ import annotations

import fcntl
import os
import resource
import socket
import struct
import termios
import threading
import time
from typing import Any

import gevent
import gevent.event
import gevent.socket
import pytest
from werkzeug.wrappers import Request

from takeover import WebSocket, broadcast, upgrade_websocket
from takeover._io.stats import STATS
from takeover.server import Server
from takeover.websocket import OVERFLOW_REASON
from tests.clients import RawClient, handshake_request
from tests.frames import client_frame

TEXT, BINARY, CLOSE = 0x1, 0x2, 0x8
KIB = 1024
MESSAGE = 64 * KIB
FRAME = MESSAGE + 10  # a 64 KiB payload takes the 64-bit length form: 10 header bytes


def connect(server: Server, **options: Any) -> tuple[WebSocket, RawClient]:
    """A raw client and the server's WebSocket for it (upgraded with ``options``)."""
    result = gevent.event.AsyncResult()

    def listener(request: Request, sock: Any, head: bytes) -> None:
        ws, _ = upgrade_websocket(request, socket=sock, head=head, idle_timeout=None, **options)
        result.set(ws)

    server.once("upgrade", listener)
    client = RawClient(server.address[1], connect=gevent.socket.create_connection)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KIB)
    client.send(handshake_request())
    assert client.read_response()[0] == 101
    ws: WebSocket = result.get(timeout=5)
    return ws, client


def numbered(i: int) -> bytes:
    return i.to_bytes(4, "big") + b"x" * (MESSAGE - 4)


def read_numbered(client: RawClient, count: int) -> list[int]:
    numbers = []
    for _ in range(count):
        opcode, fin, payload = client.read_frame()
        assert (opcode, fin, len(payload)) == (BINARY, True, MESSAGE)
        numbers.append(int.from_bytes(payload[:4], "big"))
    return numbers


def kernel_queued(sock: Any, request: int) -> int:
    return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0"))[0])


class TestBufferedAmount:
    def test_it_is_exactly_what_the_kernel_has_not_taken(self, server: Server) -> None:
        # Every byte written is in exactly one place: takeover's queue
        # (buffered_amount), the server socket's send queue, the client
        # socket's receive queue, or already read by the client.
        ws, client = connect(server, high_water_mark=None, max_buffered_amount=None)
        ws.binary_type = "bytes"
        for i in range(64):
            ws.send(numbered(i))
        total = 64 * FRAME
        server_sock = ws.session.transport.sock
        read = 0

        def accounted() -> int:
            queued_out = kernel_queued(server_sock, termios.TIOCOUTQ)
            queued_in = kernel_queued(client.sock, termios.FIONREAD)
            return ws.buffered_amount + queued_out + queued_in + read + len(client.buffer)

        for step in range(4):
            # The writer greenlet has done what the kernel lets it; the
            # loopback's acknowledgements may take a moment to be counted.
            for _ in range(200):
                gevent.idle()
                if accounted() == total:
                    break
                gevent.sleep(0.005)
            assert accounted() == total
            if step == 0:
                assert ws.buffered_amount > 0, "the kernel took it all: the test proves nothing"
            numbers = read_numbered(client, 8)
            assert numbers == list(range(step * 8, step * 8 + 8))
            read += 8 * FRAME
        assert read_numbered(client, 32) == list(range(32, 64))
        for _ in range(200):
            if ws.buffered_amount == 0:
                break
            gevent.sleep(0.005)
        assert ws.buffered_amount == 0


class TestHighWaterMark:
    def test_send_waits_then_times_out_without_sending(self, server: Server) -> None:
        ws, client = connect(server, high_water_mark=256 * KIB, send_timeout=0.3)
        most = sent = 0
        with pytest.raises(TimeoutError, match="high_water_mark=262144"):
            for i in range(2000):  # 125 MiB if nothing ever waited
                ws.send(numbered(i))
                sent += 1
                most = max(most, ws.buffered_amount)
        # It waited: at most one message beyond the mark was ever queued.
        assert most <= 256 * KIB + FRAME
        assert sent < 200
        assert ws.ready_state == WebSocket.OPEN
        # Nothing was lost or half sent: the peer reads every message sent, in order.
        assert read_numbered(client, sent) == list(range(sent))
        ws.send(b"after")
        assert client.read_frame() == (BINARY, True, b"after")

    def test_send_resumes_as_the_peer_reads(self, server: Server) -> None:
        ws, client = connect(server, high_water_mark=128 * KIB, send_timeout=10)
        count = 200  # 12.5 MiB through a 128 KiB mark
        most = 0

        def sender() -> None:
            nonlocal most
            for i in range(count):
                ws.send(numbered(i))
                most = max(most, ws.buffered_amount)

        task = gevent.spawn(sender)
        assert read_numbered(client, count) == list(range(count))
        task.get(timeout=10)
        assert most <= 128 * KIB + FRAME

    def test_a_close_started_meanwhile_discards_instead_of_raising(self, server: Server) -> None:
        ws, _client = connect(server, high_water_mark=256 * KIB, send_timeout=0.5, close_timeout=5)
        for i in range(10):
            ws.send(numbered(i))
        gevent.spawn_later(0.1, ws.close, 1000, "bye")
        for i in range(10, 110):  # waits at the mark; the close comes during the wait
            ws.send(numbered(i))  # must not raise TimeoutError: the DOM discards after close()
        assert ws.ready_state == WebSocket.CLOSING

    def test_none_never_waits_even_with_a_hard_limit(self, server: Server) -> None:
        ws, _client = connect(server, high_water_mark=None, max_buffered_amount=1024 * KIB)
        codes: list[int] = []
        ws.add_event_listener("close", lambda event: codes.append(event.code))
        for i in range(400):  # 25 MiB; send() never waits, so the limit closes it
            ws.send(numbered(i))
            if ws.ready_state != WebSocket.OPEN:
                break
        assert ws.wait_closed(5)
        assert codes == [1008]

    def test_none_never_waits(self, server: Server) -> None:
        ws, client = connect(server, high_water_mark=None, max_buffered_amount=None)
        for i in range(100):
            ws.send(numbered(i))
        assert ws.buffered_amount > 1024 * KIB  # queued, not waited for
        assert read_numbered(client, 100) == list(range(100))


class TestHardLimit:
    def test_a_peer_that_stops_reading_is_closed_with_1008(self, server: Server) -> None:
        stuck, stuck_client = connect(server, max_buffered_amount=1024 * KIB, close_timeout=5)
        # The reader of the other client shares this process's one CPU with the
        # broadcaster, so it may fall behind for a while: no limit for it.
        good, good_client = connect(server, max_buffered_amount=None)
        events: list[tuple[str, Any]] = []
        clients = {stuck, good}

        def on_close(event: Any) -> None:
            events.append(("close", (event.code, event.reason, event.was_clean)))
            clients.discard(stuck)  # as a chat does: the set broadcast() iterates changes

        stuck.add_event_listener("error", lambda event: events.append(("error", event.message)))
        stuck.add_event_listener("close", on_close)
        count = 400  # 25 MiB to each
        closes_before = STATS.snapshot()["backpressure_closes"]
        received: list[int] = []
        reader = gevent.spawn(lambda: received.extend(read_numbered(good_client, count)))
        deliveries = []
        most = 0
        for i in range(count):
            deliveries.append(broadcast(clients, numbered(i)))
            most = max(most, stuck.buffered_amount)
            gevent.sleep(0)
        reader.get(timeout=20)
        assert received == list(range(count)), "the reading client lost messages"
        assert stuck.wait_closed(5)
        assert events == [
            ("error", OVERFLOW_REASON),
            ("close", (1008, OVERFLOW_REASON, False)),
        ]
        assert deliveries[0] == 2 and deliveries[-1] == 1
        # takeover_backpressure_closes_total counts it (takeover.metrics).
        assert STATS.snapshot()["backpressure_closes"] == closes_before + 1
        # Bounded: the limit, the frame in flight and the one that overflowed.
        assert most <= 1024 * KIB + 2 * FRAME
        assert good.ready_state == WebSocket.OPEN
        # The queue held whole frames: reading now gives complete frames, then
        # the close frame with 1008, then the end of the connection.
        opcodes = []
        for _ in range(count):
            opcode, fin, payload = stuck_client.read_frame()
            opcodes.append(opcode)
            if opcode == CLOSE:
                assert int.from_bytes(payload[:2], "big") == 1008
                assert payload[2:].decode() == OVERFLOW_REASON
                break
            assert (opcode, fin, len(payload)) == (BINARY, True, MESSAGE)
        assert opcodes[-1] == CLOSE
        assert stuck_client.at_eof(5)

    def test_a_close_frame_is_never_refused_by_the_limit(self, server: Server) -> None:
        # The queue is over the limit by less than a frame: a further data frame
        # would overflow, but close() must still queue its frame behind the rest.
        ws, client = connect(server, max_buffered_amount=1024 * KIB, close_timeout=5)
        events: list[Any] = []
        ws.add_event_listener("error", events.append)
        ws.add_event_listener("close", events.append)
        transport = ws.session.transport
        sent = 0
        for i in range(100):
            if transport.buffered_amount - transport._inflight > 1024 * KIB - MESSAGE:
                break
            broadcast([ws], numbered(i))
            sent += 1
        assert broadcast([ws], numbered(sent)) == 1
        assert transport.buffered_amount - transport._inflight > 1024 * KIB  # next data frame overflows
        ws.close(1000, "bye")
        assert read_numbered(client, sent + 1) == list(range(sent + 1))
        assert client.read_close() == (1000, "bye")
        client.send(client_frame(CLOSE, (1000).to_bytes(2, "big")))
        assert ws.wait_closed(5)
        assert [(event.type, getattr(event, "code", None)) for event in events] == [("close", 1000)]

    def test_broadcast_does_not_count_a_write_that_overflowed(self, server: Server) -> None:
        ws, _client = connect(server, max_buffered_amount=256 * KIB)
        for i in range(100):
            count = broadcast([ws], numbered(i))
            if ws.ready_state != WebSocket.OPEN:
                break  # this write overflowed: its message was dropped, not sent
            assert count == 1
        else:
            raise AssertionError("never overflowed")
        assert count == 0

    def test_pongs_for_a_ping_flood_count_too(self, server: Server) -> None:
        # A peer that sends pings and never reads would make the server queue
        # pongs without end; they count towards the limit like any frame.
        ws, client = connect(server, max_buffered_amount=256 * KIB, close_timeout=1)
        closed = gevent.event.AsyncResult()
        ws.onclose = lambda event: closed.set(event.code)
        ping = client_frame(0x9, b"p" * 125)
        pings = ping * 64
        for _ in range(2000):  # 16 MiB of pongs if nothing stopped it
            if closed.ready():
                break
            try:
                client.send(pings)
            except OSError:  # the server closed the connection
                break
        else:
            raise AssertionError("the server never stopped reading pings")
        assert closed.get(timeout=5) == 1008


def thread_websocket(**options: Any) -> tuple[WebSocket, socket.socket, socket.socket]:
    """A WebSocket on a plain TCP socket of this (plain) thread: (ws, its socket, the client).

    It lives in takeover's I/O loop; this thread is the application's, as a
    listener or handler thread is."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KIB)
    ours, _ = listener.accept()
    listener.close()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * KIB)
    if "fd" in options:  # as on a server with that many files open
        fd = options.pop("fd")
        os.dup2(ours.fileno(), fd)
        ours.close()
        ours = socket.socket(fileno=fd)
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(
        path="/",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    ).get_environ()
    ws, _ = upgrade_websocket(environ, socket=ours, idle_timeout=None, **options)
    from takeover._io.loop import io_loop

    assert ws.session.loop is io_loop() and not io_loop().in_loop
    for _ in range(500):  # the session thread writes the 101, then opens
        if ws.ready_state == WebSocket.OPEN:
            break
        time.sleep(0.01)
    assert ws.ready_state == WebSocket.OPEN
    return ws, ours, client


def read_steadily(client: socket.socket, total: int, chunk: int, pause: float) -> threading.Thread:
    """Read ``total`` bytes past the 101 in ``chunk``s with ``pause`` between them, in a thread."""

    def run() -> None:
        client.settimeout(10)
        got = 0
        while got < total:
            data = client.recv(min(chunk, total - got))
            if not data:
                return
            got += len(data)
            time.sleep(pause)  # the pace of a slow reader, not a synchronisation

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_thread_sends_past_the_high_water_mark_at_the_pace_of_a_steady_reader() -> None:
    """A client that reads steadily but slowly (about 2.5 MiB/s) gets 4 MiB messages whole:
    each send() from this thread waits for room below the high-water mark, within send_timeout."""
    ws, _ours, client = thread_websocket(send_timeout=5.0, high_water_mark=1024 * KIB)
    codes: list[int] = []
    ws.add_event_listener("close", lambda event: codes.append(event.code))
    size = 1024 * KIB
    reader = read_steadily(client, 4 * (size + 10) + 129, 256 * KIB, 0.1)  # the 101, the frame headers
    most = 0
    for _ in range(4):
        ws.send(b"x" * size)
        most = max(most, ws.buffered_amount)
    reader.join(10)
    assert not reader.is_alive()
    assert most <= 2 * size + 64 * KIB  # it waited at the mark: no more than the mark and one message
    assert ws.ready_state == WebSocket.OPEN and codes == []
    client.close()


def test_thread_writes_work_on_descriptors_past_1024() -> None:
    """select() refuses descriptors from 1024 on; the I/O loop's epoll must not."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1600:
        pytest.skip(f"the open-file hard limit ({hard}) is below 1600")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1600), hard))
    ws, _ours, client = thread_websocket(send_timeout=5, fd=1500)
    transport = ws.session.transport
    assert transport is not None and transport.sock.fileno() == 1500  # the same descriptor, in the loop
    codes: list[int] = []
    ws.add_event_listener("close", lambda event: codes.append(event.code))
    size = 4 * 1024 * KIB
    reader = read_steadily(client, size, 1024 * KIB, 0)
    ws.send(b"x" * size)
    reader.join(10)
    assert ws.ready_state == WebSocket.OPEN and codes == []
    client.close()


def test_a_thread_that_sends_to_a_peer_that_never_reads_times_out_and_a_broadcast_closes_1008() -> None:
    """From a thread, as in the loop: send() waits at the high-water mark and raises
    TimeoutError after send_timeout (the connection stays open); writes that do not wait
    (broadcast) past max_buffered_amount close it with 1008. Memory stays bounded by both."""
    from takeover import broadcast

    ws, _ours, client = thread_websocket(send_timeout=0.3, max_buffered_amount=4 * 1024 * KIB)
    closed = threading.Event()
    codes: list[int] = []
    ws.add_event_listener("close", lambda event: (codes.append(event.code), closed.set()))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        for _ in range(2000):  # 125 MiB, were nothing to stop it
            ws.send(b"x" * MESSAGE)
    assert time.monotonic() - started < 5
    assert ws.ready_state == WebSocket.OPEN
    assert ws.buffered_amount <= 2 * 1024 * KIB
    for _ in range(2000):
        if not broadcast([ws], b"y" * MESSAGE):
            break
    assert closed.wait(10)
    assert codes == [1008]
    client.close()
