"""Bytes over a connected socket in a loop: read, write without blocking the caller, close.

A :class:`GeventTransport` belongs to the loop its session lives in
(:mod:`takeover._io.loop`): reading, the writer greenlet and closing run
there. ``write`` may be called from any thread (a listener thread, a
blocking handler's thread): it never blocks the caller on a slow peer.

* **The kernel first.** A write that finds nothing queued tries one
  non-blocking ``send`` on the OS socket, from the calling thread, which is
  nearly always all of it: no greenlet switch, and no hop to the loop from
  another thread. Only a remainder (the kernel pushed back) goes to a writer
  greenlet of the loop, which drains a queue in order; later writes queue
  behind it.
* **One lock** (``lock``) orders writes from every thread: a frame is framed
  (and compressed, whose state is shared, RFC 7692 §7.2.1) and written under
  it, so frames leave in the order they were made. It is an OS lock even in a
  monkey-patched process, and never held across a greenlet switch.
* ``buffered_amount`` is exactly the bytes written and not yet taken by the
  kernel, like the DOM's ``bufferedAmount``.

Two bounds protect memory from a peer that stops reading (see
:class:`~takeover.WebSocket`): :meth:`GeventTransport.wait_for_room` lets a
sender (in the loop or in any thread) wait until the queue is back under
``high_water``, and a write that finds more than ``limit`` bytes queued behind
the one in flight *overflows*: the queue is dropped, further writes are
refused and ``on_overflow`` is called. The queue only ever holds whole writes
(whole frames), so dropping it keeps the stream well-formed, and
:meth:`GeventTransport.write_last` can still queue a close frame behind the
frame in flight.

TLS sockets have no non-blocking shortcut: their writes always go through the
writer greenlet (an SSL object must not be used by two threads at once).
"""

from __future__ import annotations

import collections
import socket as _socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from takeover._io.waiting import Waiters, real_lock

if TYPE_CHECKING:
    from takeover._io.loop import Loop

__all__ = ["GeventTransport", "no_delay", "peer_address", "peer_name"]

READ_SIZE = 256 * 1024
#: Bytes of queued frames the writer greenlet joins into one write, at most.
COALESCE = 64 * 1024


class GeventTransport:
    """A gevent socket of one loop, written from any thread without blocking (see the module's docstring).

    An idle connection costs no greenlet: a reader that has waited
    ``PARK_AFTER`` seconds without data is *parked* by its loop's ``parker``
    (``recv(park=True)`` returns None and its greenlet ends; see
    :mod:`takeover._io.parker`); :meth:`resume_when_readable` then starts a
    new one when data arrives.
    """

    __slots__ = (
        "_drained", "_draining", "_fresh", "_inflight", "_loop", "_parked", "_pending", "_raw_recv",
        "_raw_send", "_room", "accepting", "broken", "buffered_amount", "closed", "high_water", "limit",
        "lock", "on_overflow", "owns_socket", "sock",
    )

    def __init__(self, sock: Any, loop: Loop) -> None:
        self.sock = sock
        self._loop = loop
        self.closed = False
        self.broken = False
        #: False once closed, broken or overflowed: writes are dropped.
        self.accepting = True
        #: Whether :meth:`abort` closes the socket, or only shuts the connection
        #: down and leaves the socket object to the server that owns it.
        self.owns_socket = True
        #: :meth:`wait_for_room` waits until no more than this many bytes are queued.
        self.high_water = sys.maxsize
        #: Bytes that may wait behind the write in flight; more overflows (None: no limit).
        self.limit: int | None = None
        #: Called once, in the writing thread, when the transport overflows.
        self.on_overflow: Callable[[], object] | None = None
        #: Held to frame and write, from any thread (see the module's docstring).
        self.lock = real_lock()
        # The OS socket under gevent's wrapper is non-blocking: sending and
        # receiving on it directly never switch greenlets (and may be done from
        # any thread). TLS sockets have no such shortcut, and are never parked.
        raw: Any = getattr(sock, "_sock", None)
        direct = raw is not None and not hasattr(sock, "context") and hasattr(sock, "_read_event")
        self._raw_send = raw.send if direct else None
        self._raw_recv = raw.recv if direct else None
        self._pending: collections.deque[bytes | memoryview] = collections.deque()
        self._draining = False
        self._inflight = 0  # bytes of the write the writer greenlet is sending, not yet sent
        self._drained: Any = None  # a gevent Event, made when a flush has to wait
        self._room = Waiters(loop, self.lock)  # senders waiting for the queue to shrink
        self._parked = False
        self._fresh = True  # no read yet
        self.buffered_amount = 0

    # -- reading (in the loop) -------------------------------------------------

    def recv(self, park: bool = False) -> bytes | None:
        """Bytes from the peer, ``b""`` at the end; None when ``park`` and idle for a while."""
        raw_recv = self._raw_recv
        if raw_recv is None or not park:
            return self._recv()
        sock = self.sock
        # The first read follows the 101 we just wrote: the peer has not answered it
        # yet, so wait for readability first instead of a recv that fails with EAGAIN.
        wait_first, self._fresh = self._fresh, False
        for _ in range(2):  # one wait for readability; a spurious wake-up waits again
            if not wait_first:
                try:
                    data: bytes = raw_recv(READ_SIZE)
                    return data
                except BlockingIOError:
                    pass
                except OSError:
                    return b""
            wait_first = False
            try:
                if not self._loop.parker.wait_readable(self, sock):
                    return None
            except OSError:  # the socket was closed under us
                return b""
        return self._recv()

    def _recv(self) -> bytes:
        try:
            data: bytes = self.sock.recv(READ_SIZE)
            return data
        except (OSError, ValueError):
            return b""

    def resume_when_readable(self, resume: Callable[[], object]) -> None:
        """Call ``resume()`` in a new greenlet once the socket is readable (or closed)."""
        if self.closed:
            return
        watcher = self.sock._read_event
        spawn = self._loop.spawn

        def readable() -> None:  # runs in the hub: only hand over to a greenlet
            watcher.stop()
            self._parked = False
            spawn(resume)

        self._parked = True
        watcher.start(readable)

    # -- writing (from any thread) ----------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue ``data``; write at once what the kernel takes."""
        with self.lock:
            self.write_locked(data)

    def write_locked(self, data: bytes) -> None:
        """:meth:`write`, with :attr:`lock` already held by the caller."""
        if not self.accepting:
            return
        if self._draining:
            limit = self.limit
            if limit is not None and self.buffered_amount - self._inflight > limit:
                self._overflow()
            else:
                self._pending.append(data)
                self.buffered_amount += len(data)
            return
        sent = 0
        if self._raw_send is not None:
            try:
                sent = self._raw_send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._break()
                return
            if sent == len(data):
                return
        self._start_draining(memoryview(data)[sent:] if sent else data)

    def write_last(self, data: bytes) -> None:
        """Queue ``data`` even after an overflow (the close frame that ends the stream)."""
        with self.lock:
            self.write_last_locked(data)

    def write_last_locked(self, data: bytes) -> None:
        """Queue ``data`` even after an overflow (the close frame that ends the stream); lock held."""
        if self.closed or self.broken or not data:
            return
        if self._draining:
            self._pending.append(data)
            self.buffered_amount += len(data)
        else:
            self._start_draining(data)

    def _start_draining(self, rest: bytes | memoryview) -> None:
        self.buffered_amount += len(rest)
        self._inflight = len(rest)
        self._draining = True
        loop = self._loop
        if loop.in_loop:
            loop.spawn(self._drain, rest)
        else:  # the call queue runs it in a greenlet of its own
            loop.call_soon_threadsafe(self._drain, rest)

    def _drain(self, chunk: bytes | memoryview) -> None:
        """The writer greenlet: send ``chunk``, then the queue, in order, counting every byte."""
        pending, lock, room = self._pending, self.lock, self._room
        send = self.sock.send  # cooperative: waits for room, returns what the kernel took
        try:
            while not self.closed:
                view = memoryview(chunk)
                while view:
                    sent = send(view)
                    view = view[sent:]
                    with lock:
                        self._inflight -= sent
                        self.buffered_amount -= sent
                        if room and self.buffered_amount <= self.high_water:
                            room.notify()
                    if self.closed:
                        return
                with lock:
                    if not pending:
                        self._draining = False
                        self._inflight = 0
                        break
                    chunk = pending.popleft()
                    if pending and len(chunk) < COALESCE:
                        # Frames queued behind the one in flight (a fan-out to a member that
                        # reads slower than the room talks) leave in one write, not one each.
                        parts, size = [chunk], len(chunk)
                        while pending and size + len(pending[0]) <= COALESCE:
                            part = pending.popleft()
                            parts.append(part)
                            size += len(part)
                        chunk = b"".join(parts)
                    self._inflight = len(chunk)
        except (OSError, ValueError):  # ValueError: the socket object was closed
            self._break()
        finally:
            with lock:
                if self._draining and (self.closed or self.broken):
                    self._draining = False
                    self._inflight = 0
                if self.closed or self.broken:
                    pending.clear()
                    self.buffered_amount = 0
                room.notify()
            if self._drained is not None:
                self._drained.set()

    def _overflow(self) -> None:
        # More than ``limit`` bytes wait behind the write in flight: the peer is
        # not reading. Drop the queue (whole frames only) and refuse more.
        self.accepting = False
        pending = self._pending
        if pending:
            self.buffered_amount -= sum(map(len, pending))
            pending.clear()
        self._room.notify()
        callback, self.on_overflow = self.on_overflow, None
        if callback is not None:
            callback()

    def _break(self) -> None:
        # The peer is gone: drop what is queued and wake the reader.
        self.broken = True
        self.accepting = False
        self._pending.clear()
        self.buffered_amount = 0
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass
        self._room.notify()

    def stop_waiting(self) -> None:
        """Wake the senders waiting for room (with the lock held): the session began to close."""
        self._room.notify()

    def wait_for_room(self, timeout: float | None, stop: Callable[[], bool] | None = None) -> bool:
        """Wait until at most ``high_water`` bytes are queued; False after ``timeout`` seconds.

        From the loop's greenlets or any thread. Returns True at once in the
        hub itself, which must never block, once the transport no longer
        accepts writes, and when ``stop()`` says so (the caller checks its state).
        """
        if self.buffered_amount <= self.high_water:
            return True
        if self._loop.in_loop:
            import gevent

            if gevent.getcurrent() is gevent.get_hub():
                return True
        return self._room.wait_for(
            lambda: (
                self.buffered_amount <= self.high_water or not self.accepting or (stop is not None and stop())
            ),
            timeout,
        )

    # -- ending (in the loop) ------------------------------------------------------

    def flush(self, timeout: float | None) -> bool:
        """Wait until everything queued is written; False on timeout."""
        if not self._draining:
            return True
        if self._drained is None:
            self._drained = self._loop.event()
        self._drained.clear()
        return bool(self._drained.wait(timeout))

    def shutdown_write(self) -> None:
        """Send FIN now: the peer reads what the kernel holds, then sees EOF.

        Bytes still queued in the transport are not sent after it: call
        :meth:`flush` first (the session does).
        """
        try:
            self.sock.shutdown(_socket.SHUT_WR)
        except OSError:
            pass

    def abort(self) -> None:
        """Close now; a reader waiting in ``recv`` wakes up with end of stream."""
        if self._parked:
            self._parked = False
            self.sock._read_event.stop()
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.accepting = False
            self._room.notify()
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass
        if self.owns_socket:
            try:
                self.sock.close()
            except OSError:
                pass


def no_delay(sock: Any) -> None:
    """Turn Nagle's algorithm off on a TCP socket (nothing for other sockets)."""
    # Messages are written whole: Nagle's algorithm only delays them (ws,
    # websockets and asyncio set TCP_NODELAY too). Measured: broadcast to 200
    # clients went from 83k to 325k deliveries/s.
    try:
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass  # not TCP (a socketpair, a Unix socket)


def peer_address(sock: Any) -> Any:
    """The peer's address, or None (not connected, closed, not a socket)."""
    try:
        return sock.getpeername()
    except (OSError, ValueError, AttributeError):
        return None


def peer_name(peer: Any) -> str:
    """An address as ``host:port`` for logs, ``-`` when unknown."""
    if peer is None:
        return "-"
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer) or "-"
