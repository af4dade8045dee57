"""The byte transport under a WebSocket, over socket pairs in this process.

:class:`GeventTransport`: a write never blocks the caller, from the loop or from
any other thread (the kernel first, then a writer greenlet that drains a queue in
the loop). Written to what
a WebSocket relies on, through the methods and settings it uses (``write``,
``write_last``, ``recv``, ``flush``, ``wait_for_room``, ``abort``,
``shutdown_write``, ``buffered_amount``, ``high_water``, ``limit``,
``send_timeout``, ``on_overflow``, ``owns_socket``), not to how they are built.

The pairs are AF_UNIX stream sockets: what the sender's kernel took is at once
in the peer's receive queue (``FIONREAD``), so every byte written is in exactly
one of three places: the transport (``buffered_amount``), the peer's receive
queue, or read by the peer. Parking an idle gevent reader is tests/io/test_parker.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.event
import gevent.socket
import pytest

from takeover._io.loop import current_loop
from takeover._io.transport import GeventTransport
from tests.io.waiting import rounds, unread, wait_until

KIB = 1024
MIB = 1024 * KIB
BIG = 4 * MIB  # far more than a socket pair's buffers take (about 200 KiB each way here)


def read_exactly(sock: Any, size: int, chunk: int = 256 * KIB) -> bytes:
    parts, got = [], 0
    while got < size:
        data = sock.recv(min(chunk, size - got))
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def read_to_eof(sock: Any) -> bytes:
    parts = []
    while True:
        data = sock.recv(256 * KIB)
        if not data:
            return b"".join(parts)
        parts.append(data)


# -- GeventTransport ----------------------------------------------------------------


@pytest.fixture
def gevent_pair() -> Iterator[tuple[GeventTransport, Any]]:
    """A GeventTransport on one end of a gevent socket pair, and the other end (the peer)."""
    ours, peer = gevent.socket.socketpair()
    peer.settimeout(10)
    transport = GeventTransport(ours, current_loop())
    yield transport, peer
    transport.abort()
    peer.close()


class TestGeventWrite:
    def test_writes_reach_the_peer_whole_and_in_order(self, gevent_pair: tuple[GeventTransport, Any]) -> None:
        transport, peer = gevent_pair
        writes = [bytes([i]) * size for i, size in enumerate([1, 100, BIG, 10, 300 * KIB, 0, 7, MIB])]
        for data in writes:
            transport.write(data)
        expected = b"".join(writes)
        assert read_exactly(peer, len(expected)) == expected
        assert transport.flush(5) is True
        assert transport.buffered_amount == 0

    def test_a_write_the_kernel_takes_whole_is_not_buffered(
        self, gevent_pair: tuple[GeventTransport, Any]
    ) -> None:
        transport, peer = gevent_pair
        transport.write(b"x" * 1000)
        # Without a greenlet switch: nothing left over, it is all with the peer already.
        assert transport.buffered_amount == 0
        assert unread(peer) == 1000
        assert transport.flush(0) is True

    def test_buffered_amount_is_exactly_what_the_kernel_has_not_taken(
        self, gevent_pair: tuple[GeventTransport, Any]
    ) -> None:
        transport, peer = gevent_pair
        total = 0
        for size in (BIG, 64 * KIB, 1, MIB):
            transport.write(b"x" * size)
            total += size
            # Every byte is in the transport or with the peer, at once (no switch yet).
            assert transport.buffered_amount + unread(peer) == total
        assert transport.buffered_amount > 0, "the kernel took it all: the test proves nothing"
        read = 0
        for _ in rounds(10, "the peer to read everything"):
            if read >= total:
                break
            # The writer greenlet refills what the peer read (the kernel lets it): count then.
            wait_until(
                lambda: unread(peer) > 0 or transport.buffered_amount == 0,
                what="the writer to refill the peer's queue",
            )
            assert transport.buffered_amount + unread(peer) + read == total
            read += len(peer.recv(300 * KIB))
        assert read == total
        wait_until(lambda: transport.buffered_amount == 0, what="the queue to drain")

    def test_queued_writes_add_exactly_their_length(self, gevent_pair: tuple[GeventTransport, Any]) -> None:
        transport, _peer = gevent_pair
        transport.write(b"x" * BIG)
        before = transport.buffered_amount
        assert before > 0
        for size in (1, 125, 64 * KIB):
            transport.write(b"y" * size)
            assert transport.buffered_amount == before + size
            before += size

    def test_flush_waits_for_the_queue_and_times_out(self, gevent_pair: tuple[GeventTransport, Any]) -> None:
        transport, peer = gevent_pair
        assert transport.flush(0) is True  # nothing queued
        transport.write(b"x" * BIG)
        started = time.monotonic()
        assert transport.flush(0.2) is False  # the peer reads nothing
        assert 0.15 <= time.monotonic() - started < 2
        reader = gevent.spawn(read_exactly, peer, BIG)
        assert transport.flush(5) is True
        assert transport.buffered_amount == 0
        assert len(reader.get(timeout=5)) == BIG

    def test_a_write_to_a_vanished_peer_neither_raises_nor_queues(
        self, gevent_pair: tuple[GeventTransport, Any]
    ) -> None:
        transport, peer = gevent_pair
        peer.close()
        transport.write(b"x" * BIG)
        transport.write(b"more")
        assert transport.flush(5) is True
        assert transport.buffered_amount == 0
        assert transport.recv() == b""  # the reader sees the end


class TestGeventOverflow:
    def test_the_write_that_finds_more_than_limit_queued_overflows(
        self, gevent_pair: tuple[GeventTransport, Any]
    ) -> None:
        transport, _peer = gevent_pair
        limit = 10 * KIB
        overflows: list[float] = []
        transport.limit = limit
        transport.on_overflow = lambda: overflows.append(time.monotonic())
        transport.write(b"a" * BIG)  # in flight: the peer reads nothing
        in_flight = transport.buffered_amount
        assert in_flight > 0
        transport.write(b"b" * limit)  # queued: the queue was empty
        transport.write(b"c")  # queued: exactly ``limit`` waited behind the write in flight
        assert overflows == [] and transport.buffered_amount == in_flight + limit + 1
        transport.write(b"d")  # more than ``limit`` waits: this one overflows
        assert len(overflows) == 1, "on_overflow is called in the writing task, before write returns"
        # The queue (whole writes only) is dropped; the write in flight goes on.
        assert transport.buffered_amount == in_flight
        transport.write(b"e")  # refused, and on_overflow is not called again
        assert len(overflows) == 1 and transport.buffered_amount == in_flight

    def test_write_last_after_an_overflow_follows_the_write_in_flight(
        self, gevent_pair: tuple[GeventTransport, Any]
    ) -> None:
        transport, peer = gevent_pair
        overflows: list[bool] = []
        transport.limit = 0
        transport.on_overflow = lambda: overflows.append(True)
        transport.write(b"a" * BIG)
        transport.write(b"b")  # queued behind the write in flight
        transport.write(b"c")  # finds 1 byte queued, more than 0: overflows, b and c are dropped
        assert overflows == [True]
        transport.write_last(b"\x88\x02\x03\xf0")  # the close frame that ends the stream
        transport.write(b"f")  # still refused
        reader = gevent.spawn(read_exactly, peer, BIG + 4)
        assert transport.flush(5) is True
        assert reader.get(timeout=5) == b"a" * BIG + b"\x88\x02\x03\xf0"
        peer.settimeout(0.2)
        with pytest.raises(TimeoutError):
            peer.recv(1)  # nothing after the close frame
        assert overflows == [True]

    def test_without_a_limit_the_queue_grows(self, gevent_pair: tuple[GeventTransport, Any]) -> None:
        transport, peer = gevent_pair
        overflows: list[bool] = []
        transport.on_overflow = lambda: overflows.append(True)
        assert transport.limit is None
        for _ in range(8):
            transport.write(b"x" * MIB)
        assert overflows == []
        assert transport.buffered_amount + unread(peer) == 8 * MIB
        reader = gevent.spawn(read_exactly, peer, 8 * MIB)
        assert len(reader.get(timeout=10)) == 8 * MIB


class TestGeventWaitForRoom:
    def test_it_returns_at_once_under_the_high_water_mark(
        self, gevent_pair: tuple[GeventTransport, Any]
    ) -> None:
        transport, _peer = gevent_pair
        transport.high_water = 64 * KIB
        assert transport.wait_for_room(0) is True  # nothing queued
        transport.write(b"x" * BIG)
        transport.high_water = transport.buffered_amount  # at the mark is not over it
        assert transport.wait_for_room(0) is True

    def test_it_waits_until_the_queue_is_back_at_high_water(
        self, gevent_pair: tuple[GeventTransport, Any]
    ) -> None:
        transport, peer = gevent_pair
        high_water = MIB
        transport.high_water = high_water
        transport.write(b"x" * BIG)
        assert transport.buffered_amount > high_water
        seen: list[int] = []

        def waiter() -> None:
            assert transport.wait_for_room(None) is True
            seen.append(transport.buffered_amount)

        waiting = gevent.spawn(waiter)
        waiting.join(timeout=0.1)  # ends early only if it returns: it must not, for 0.1 s
        assert not waiting.dead, "it returned while the peer read nothing"
        read = 0
        for _ in rounds(10, "wait_for_room to return"):
            if waiting.dead:
                break
            read += len(peer.recv(64 * KIB))
            # The writer refills what the peer read; the waiter returns once the queue is at the mark.
            wait_until(lambda: waiting.dead or unread(peer) > 0, what="the writer to move on")
        waiting.get()
        assert seen[0] <= high_water
        assert seen[0] > 0 and read < BIG, "it waited for an empty queue, not for the mark"
        read += len(read_exactly(peer, BIG - read))
        assert read == BIG

    def test_it_gives_up_after_the_timeout(self, gevent_pair: tuple[GeventTransport, Any]) -> None:
        transport, _peer = gevent_pair
        transport.high_water = 0
        transport.write(b"x" * BIG)
        started = time.monotonic()
        assert transport.wait_for_room(0.2) is False
        assert 0.15 <= time.monotonic() - started < 2

    def test_an_abort_releases_a_waiting_sender(self, gevent_pair: tuple[GeventTransport, Any]) -> None:
        transport, _peer = gevent_pair
        transport.high_water = 0
        transport.write(b"x" * BIG)
        waiting = gevent.spawn(transport.wait_for_room, None)
        waiting.join(timeout=0.05)  # ends early only if it returns: it must not, for 0.05 s
        assert not waiting.dead
        transport.abort()
        assert waiting.get(timeout=5) is True  # the caller then finds the transport closed

    def test_an_overflow_releases_a_waiting_sender(self, gevent_pair: tuple[GeventTransport, Any]) -> None:
        transport, _peer = gevent_pair
        transport.high_water = 0
        transport.limit = 0
        transport.write(b"x" * BIG)
        transport.write(b"queued")
        waiting = gevent.spawn(transport.wait_for_room, None)
        waiting.join(timeout=0.05)  # ends early only if it returns: it must not, for 0.05 s
        assert not waiting.dead
        transport.write(b"overflows")
        assert waiting.get(timeout=5) is True

    def test_it_never_blocks_the_hub(self, gevent_pair: tuple[GeventTransport, Any]) -> None:
        transport, _peer = gevent_pair
        transport.high_water = 0
        transport.write(b"x" * BIG)
        result = gevent.event.AsyncResult()

        def in_the_hub() -> None:
            assert gevent.getcurrent() is gevent.get_hub()
            result.set(transport.wait_for_room(None))

        gevent.get_hub().loop.run_callback(in_the_hub)
        assert result.get(timeout=5) is True


class TestGeventCloseAndShutdown:
    def test_abort_wakes_a_blocked_reader_with_the_end_of_stream(
        self, gevent_pair: tuple[GeventTransport, Any]
    ) -> None:
        transport, peer = gevent_pair
        reader = gevent.spawn(transport.recv)
        reader.join(timeout=0.05)  # ends early only if recv returns: it must block, with no data
        assert not reader.dead
        transport.abort()
        assert reader.get(timeout=5) == b""
        assert read_to_eof(peer) == b""  # the peer sees the end too

    def test_writes_after_abort_are_dropped(self, gevent_pair: tuple[GeventTransport, Any]) -> None:
        transport, peer = gevent_pair
        transport.write(b"before")
        transport.abort()
        transport.abort()  # twice is harmless
        transport.write(b"after")
        transport.write_last(b"last")
        assert transport.buffered_amount == 0
        assert transport.flush(1) is True
        assert read_to_eof(peer) == b"before"
        assert transport.recv() == b""

    def test_abort_with_a_queue_drops_it(self, gevent_pair: tuple[GeventTransport, Any]) -> None:
        transport, peer = gevent_pair
        transport.write(b"x" * BIG)
        transport.abort()
        wait_until(lambda: transport.buffered_amount == 0, what="the queue to be dropped")
        assert len(read_to_eof(peer)) < BIG

    def test_abort_leaves_a_socket_it_does_not_own_open(
        self, gevent_pair: tuple[GeventTransport, Any]
    ) -> None:
        transport, peer = gevent_pair
        transport.owns_socket = False
        transport.write(b"bye")
        transport.abort()
        assert transport.sock.fileno() != -1  # the server that owns it closes it
        assert read_to_eof(peer) == b"bye"
        assert transport.recv() == b""
        transport.sock.close()

    def test_shutdown_write_after_flush_ends_the_stream_but_still_reads(
        self, gevent_pair: tuple[GeventTransport, Any]
    ) -> None:
        transport, peer = gevent_pair
        transport.write(b"x" * BIG)
        transport.write(b"tail")
        reader = gevent.spawn(read_to_eof, peer)
        assert transport.flush(5) is True
        transport.shutdown_write()
        assert reader.get(timeout=5) == b"x" * BIG + b"tail"
        peer.sendall(b"the peer may still send")
        assert transport.recv() == b"the peer may still send"
        peer.close()
        assert transport.recv() == b""

    def test_recv_returns_data_then_the_end_of_stream(self, gevent_pair: tuple[GeventTransport, Any]) -> None:
        transport, peer = gevent_pair
        peer.sendall(b"hello")
        assert transport.recv() == b"hello"
        peer.close()
        assert transport.recv() == b""
        assert transport.recv() == b""


# -- writes from other threads than the loop's --------------------------------------
#
# A session lives in one loop; its application code may run in other threads (the I/O
# loop's listener threads, a blocking handler's thread). Their writes go to the kernel
# from their own thread when nothing is queued, and to the loop's writer greenlet when
# the kernel pushes back.


@pytest.fixture
def loop_pair() -> Iterator[tuple[GeventTransport, socket.socket]]:
    """A transport of the I/O loop (another thread's hub) on a socket pair, and the peer."""
    from takeover._io.adopt import adopt, detach_for_loop
    from takeover._io.loop import io_loop

    loop = io_loop()
    ours, peer = socket.socketpair()
    peer.settimeout(10)
    moved = detach_for_loop(ours, in_loop=False)
    transport: GeventTransport = loop.run_sync(lambda: loop.transport(adopt(moved)), timeout=5)
    yield transport, peer
    loop.run_sync(transport.abort, timeout=5)
    peer.close()


def in_thread(fn: Callable[..., Any], *args: Any) -> tuple[threading.Thread, list[Any]]:
    """Run ``fn(*args)`` in a daemon thread; its result is appended to the list."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(fn(*args)), daemon=True)
    thread.start()
    return thread, result


class TestWritesFromAnotherThread:
    def test_a_write_the_kernel_takes_leaves_nothing_queued(
        self, loop_pair: tuple[GeventTransport, socket.socket]
    ) -> None:
        transport, peer = loop_pair
        transport.write(b"hello")  # this thread is not the loop's
        assert transport.buffered_amount == 0
        assert read_exactly(peer, 5) == b"hello"

    def test_the_rest_is_drained_by_the_loop_in_order(
        self, loop_pair: tuple[GeventTransport, socket.socket]
    ) -> None:
        transport, peer = loop_pair
        transport.write(b"x" * BIG)  # the kernel takes a part: the loop's writer sends the rest
        assert transport.buffered_amount > 0
        transport.write(b"tail")  # queued behind it, not sent before it
        assert transport.buffered_amount + unread(peer) == BIG + 4
        assert read_exactly(peer, BIG + 4) == b"x" * BIG + b"tail"
        wait_until(lambda: transport.buffered_amount == 0, what="the queue to drain")

    def test_writes_of_two_threads_and_the_loop_keep_whole_frames(
        self, loop_pair: tuple[GeventTransport, socket.socket]
    ) -> None:
        from takeover._io.loop import io_loop

        transport, peer = loop_pair
        chunk = 64 * KIB
        parts = {name: bytes([name]) * chunk for name in b"abc"}
        reader, got = in_thread(read_exactly, peer, 3 * 20 * chunk)
        writers = [in_thread(lambda p: [transport.write(p) for _ in range(20)], parts[n])[0] for n in b"ab"]
        io_loop().run_sync(lambda: [transport.write(parts[ord("c")]) for _ in range(20)], timeout=10)
        for writer in writers:
            writer.join(10)
        reader.join(10)
        data = got[0]
        blocks = [data[i:i + chunk] for i in range(0, len(data), chunk)]
        assert all(block in parts.values() for block in blocks), "a write was interleaved with another"
        assert sorted(block[:1] for block in blocks) == [b"a"] * 20 + [b"b"] * 20 + [b"c"] * 20

    def test_wait_for_room_in_a_thread_returns_when_the_peer_reads(
        self, loop_pair: tuple[GeventTransport, socket.socket]
    ) -> None:
        transport, peer = loop_pair
        transport.high_water = 64 * KIB
        transport.write(b"x" * BIG)
        assert transport.buffered_amount > transport.high_water
        assert transport.wait_for_room(0.05) is False  # nobody reads: no room within the timeout
        waiter, result = in_thread(transport.wait_for_room, 10)
        read_exactly(peer, BIG)
        waiter.join(10)
        assert result == [True] and transport.buffered_amount <= transport.high_water

    def test_a_thread_that_overflows_the_limit_is_refused(
        self, loop_pair: tuple[GeventTransport, socket.socket]
    ) -> None:
        transport, _peer = loop_pair
        transport.limit = 256 * KIB
        overflows: list[str] = []
        transport.on_overflow = lambda: overflows.append(threading.current_thread().name)
        transport.write(b"x" * BIG)  # in flight
        for _ in range(8):
            transport.write(b"y" * (64 * KIB))  # queued, then over the limit
        assert overflows == [threading.current_thread().name]
        assert not transport.accepting
        assert transport.buffered_amount <= BIG  # the queue behind the write in flight was dropped

    def test_a_write_to_a_vanished_peer_does_not_raise(
        self, loop_pair: tuple[GeventTransport, socket.socket]
    ) -> None:
        transport, peer = loop_pair
        peer.close()
        for _ in range(4):
            transport.write(b"x" * BIG)
        wait_until(lambda: transport.buffered_amount == 0, what="the queue to be dropped")
        assert not transport.accepting
