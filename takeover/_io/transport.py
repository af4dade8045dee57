"""Byte transports over a connected socket: read, write without blocking the caller, close.

``write`` never blocks the caller on a slow peer. The gevent transport tries
one non-blocking ``send`` (no greenlet switch when the kernel has room, which
is nearly always) and leaves any remainder to a writer greenlet that drains a
queue in order. ``buffered_amount`` is exactly the number of bytes written to
the transport and not yet taken by the kernel, like the DOM's
``bufferedAmount``: the writer greenlet subtracts what each ``send`` took.

Two bounds protect memory from a peer that stops reading (see
:class:`~takeover.WebSocket`): :meth:`GeventTransport.wait_for_room` lets a
sender wait until the queue is back under ``high_water``, and a write that
finds more than ``limit`` bytes queued behind the one in flight *overflows*:
the queue is dropped, further writes are refused and ``on_overflow`` is
called. The queue only ever holds whole writes (whole frames), so dropping it
keeps the stream well-formed, and :meth:`GeventTransport.write_last` can still
queue a close frame behind the frame in flight.

The thread transport writes in the caller's thread under a lock; a write of
which the peer takes nothing for ``send_timeout`` seconds overflows the same way.
"""

from __future__ import annotations

import collections
import select
import socket as _socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from takeover._io.parker import Parker

__all__ = ["GeventTransport", "ThreadTransport"]

READ_SIZE = 256 * 1024
#: Linux's per-call non-blocking flag; where it is missing, thread writes block.
_DONTWAIT = getattr(_socket, "MSG_DONTWAIT", 0)


class _BaseTransport:
    __slots__ = (
        "accepting", "broken", "closed", "high_water", "limit", "on_overflow", "owns_socket",
        "send_timeout", "sock",
    )

    def __init__(self, sock: Any) -> None:
        self.sock = sock
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
        #: Seconds a thread write may take before it overflows (threads only).
        self.send_timeout: float | None = None
        #: Called once, in the writing task, when the transport overflows.
        self.on_overflow: Callable[[], object] | None = None

    def recv(self, park: bool = False) -> bytes | None:
        """Bytes from the peer; ``b""`` at end of stream or on a dead connection.

        Blocking transports never park (return None); see :class:`GeventTransport`.
        """
        try:
            data: bytes = self.sock.recv(READ_SIZE)
            return data
        except (OSError, ValueError):
            return b""

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
        """Close now; a reader blocked in ``recv`` wakes up with end of stream."""
        if self.closed:
            return
        self.closed = True
        self.accepting = False
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass
        if self.owns_socket:
            try:
                self.sock.close()
            except OSError:
                pass

    def _overflowed(self) -> None:
        callback, self.on_overflow = self.on_overflow, None
        if callback is not None:
            callback()


class GeventTransport(_BaseTransport):
    """A gevent socket, written without blocking the calling greenlet.

    An idle connection costs no greenlet: a reader that has waited
    ``PARK_AFTER`` seconds without data is *parked* by its hub's ``parker``
    (``recv(park=True)`` returns None and its greenlet ends; see
    :mod:`takeover._io.parker`); :meth:`resume_when_readable` then starts a
    new one when data arrives.
    """

    __slots__ = (
        "_drained", "_draining", "_fresh", "_gevent", "_inflight", "_parked", "_parker", "_pending",
        "_raw_recv",
        "_raw_send", "_room", "buffered_amount",
    )

    def __init__(self, sock: Any, parker: Parker) -> None:
        super().__init__(sock)
        self._parker = parker
        import gevent

        self._gevent = gevent
        # The OS socket under gevent's wrapper is non-blocking: sending and
        # receiving on it directly never switch greenlets. TLS sockets have no
        # such shortcut, and are never parked.
        raw: Any = getattr(sock, "_sock", None)
        direct = raw is not None and not hasattr(sock, "context") and hasattr(sock, "_read_event")
        self._raw_send = raw.send if direct else None
        self._raw_recv = raw.recv if direct else None
        self._pending: collections.deque[bytes] | None = None  # made when a write first waits
        self._draining = False
        self._inflight = 0  # bytes of the write the writer greenlet is sending, not yet sent
        self._drained: Any = None  # an Event, made when a flush has to wait
        self._room: Any = None  # an Event, made when a sender waits for the queue to shrink
        self._parked = False
        self._fresh = True  # no read yet
        self.buffered_amount = 0

    def recv(self, park: bool = False) -> bytes | None:
        """Bytes from the peer, ``b""`` at the end; None when ``park`` and idle for a while."""
        raw_recv = self._raw_recv
        if raw_recv is None or not park:
            return super().recv()
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
                if not self._parker.wait_readable(self, sock):
                    return None
            except OSError:  # the socket was closed under us
                return b""
        return super().recv()

    def resume_when_readable(self, resume: Callable[[], object]) -> None:
        """Call ``resume()`` in a new greenlet once the socket is readable (or closed)."""
        if self.closed:
            return
        watcher = self.sock._read_event
        spawn = self._gevent.spawn_raw

        def readable() -> None:  # runs in the hub: only hand over to a greenlet
            watcher.stop()
            self._parked = False
            spawn(resume)

        self._parked = True
        watcher.start(readable)

    def abort(self) -> None:
        if self._parked:
            self._parked = False
            self.sock._read_event.stop()
        super().abort()
        self._wake()

    def write(self, data: bytes) -> None:
        """Queue ``data``; write at once what the kernel takes."""
        if not self.accepting:
            return
        if self._draining:
            limit = self.limit
            if limit is not None and self.buffered_amount - self._inflight > limit:
                self._overflow()
            else:
                self._queue(data)
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
        if self.closed or self.broken:
            return
        if self._draining:
            self._queue(data)
        else:
            self._start_draining(data)

    def _queue(self, data: bytes) -> None:
        """Queue ``data`` behind what the writer greenlet is sending."""
        assert self._pending is not None
        self._pending.append(data)
        self.buffered_amount += len(data)

    def _start_draining(self, rest: bytes | memoryview) -> None:
        if self._pending is None:
            self._pending = collections.deque()
        self.buffered_amount += len(rest)
        self._inflight = len(rest)
        self._draining = True
        self._gevent.spawn_raw(self._drain, rest)

    def _drain(self, chunk: bytes | memoryview) -> None:
        """The writer greenlet: send ``chunk``, then the queue, in order, counting every byte."""
        pending = self._pending
        assert pending is not None
        send = self.sock.send  # cooperative: waits for room, returns what the kernel took
        try:
            while not self.closed:
                view = memoryview(chunk)
                while view:
                    sent = send(view)
                    view = view[sent:]
                    self._inflight -= sent
                    self.buffered_amount -= sent
                    if self._room is not None and self.buffered_amount <= self.high_water:
                        self._room.set()
                    if self.closed:
                        return
                if not pending:
                    break
                chunk = pending.popleft()
                self._inflight = len(chunk)
        except (OSError, ValueError):  # ValueError: the socket object was closed
            self._break()
        finally:
            self._draining = False
            self._inflight = 0
            if self.closed or self.broken:
                pending.clear()
                self.buffered_amount = 0
            if self._drained is not None:
                self._drained.set()
            if self._room is not None:
                self._room.set()

    def _overflow(self) -> None:
        # More than ``limit`` bytes wait behind the write in flight: the peer is
        # not reading. Drop the queue (whole frames only) and refuse more.
        self.accepting = False
        pending = self._pending
        if pending:
            self.buffered_amount -= sum(map(len, pending))
            pending.clear()
        self._wake()
        self._overflowed()

    def _break(self) -> None:
        # The peer is gone: drop what is queued and wake the reader.
        self.broken = True
        self.accepting = False
        if self._pending is not None:
            self._pending.clear()
        self.buffered_amount = 0
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass
        self._wake()

    def _wake(self) -> None:
        if self._room is not None:
            self._room.set()

    def wait_for_room(self, timeout: float | None) -> bool:
        """Wait until at most ``high_water`` bytes are queued; False after ``timeout`` seconds.

        Returns True at once in the hub, which must never block, and once the
        transport no longer accepts writes (the caller checks its state).
        """
        if self.buffered_amount <= self.high_water:
            return True
        if self._gevent.getcurrent() is self._gevent.get_hub():
            return True
        if self._room is None:
            import gevent.event

            self._room = gevent.event.Event()
        deadline = None if timeout is None else time.monotonic() + timeout
        for _ in range(1_000_000):  # each pass waits for the writer's progress
            if self.buffered_amount <= self.high_water or not self.accepting:
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._room.clear()
            self._room.wait(remaining)
        return False

    def flush(self, timeout: float | None) -> bool:
        """Wait until everything queued is written; False on timeout."""
        if not self._draining:
            return True
        if self._drained is None:
            import gevent.event

            self._drained = gevent.event.Event()
        self._drained.clear()
        return bool(self._drained.wait(timeout))


class ThreadTransport(_BaseTransport):
    """A blocking socket shared by a reader thread and writers, one write at a time.

    ``buffered_amount`` counts the bytes of the write in progress that the
    kernel has not taken yet, call by call when ``send_timeout`` is set; without
    it (or over TLS) the write is one ``sendall`` and counts whole until it returns.
    """

    __slots__ = ("_lock", "buffered_amount")

    def __init__(self, sock: Any) -> None:
        super().__init__(sock)
        self._lock = threading.Lock()
        self.buffered_amount = 0

    def write(self, data: bytes) -> None:
        """Write ``data`` before returning (the caller's thread blocks while the peer reads).

        Gives up when the kernel takes nothing for ``send_timeout`` seconds: then
        the transport overflows (see :meth:`_time_out`).
        """
        if not self.accepting:
            return
        # The lock's holder returns within send_timeout of the peer's last read,
        # so waiting for it needs no timeout of its own.
        with self._lock:
            if not self.accepting:
                return
            self.buffered_amount += len(data)
            if self._send(memoryview(data)):
                return
            self.accepting = False  # inside the lock: no frame may follow a half-written one
        self._time_out()

    def _send(self, view: memoryview) -> bool:
        """Send all of ``view``; False if the kernel took nothing for ``send_timeout`` seconds."""
        sock = self.sock
        timeout = self.send_timeout
        try:
            if timeout is None or not _DONTWAIT or isinstance(sock, ssl.SSLSocket):
                sock.sendall(view)  # TLS takes no flags; send_timeout does not apply
                self.buffered_amount -= len(view)
                return True
            poller = None
            while view:
                try:
                    sent = sock.send(view, _DONTWAIT)
                except BlockingIOError:
                    if poller is None:
                        # poll, not select: select() refuses descriptors from 1024 on.
                        poller = select.poll()
                        poller.register(sock, select.POLLOUT)
                    if not poller.poll(timeout * 1000):  # the clock restarts on each progress
                        self.buffered_amount -= len(view)
                        return False
                    continue
                view = view[sent:]
                self.buffered_amount -= sent
        except (OSError, ValueError):  # ValueError: a socket closed meanwhile
            self.buffered_amount -= len(view)
            self.broken = True
            self.accepting = False
            try:
                sock.shutdown(_socket.SHUT_RDWR)
            except OSError:
                pass
        return True

    def _time_out(self) -> None:
        # The peer took nothing for send_timeout seconds. A frame may be half
        # written, so nothing can follow it: end the connection. The WebSocket
        # hears of it first, so the reader's end of stream is known for what it is.
        self._overflowed()
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass

    def resume_when_readable(self, resume: Callable[[], object]) -> None:
        """Never needed: a blocking transport's ``recv`` never parks."""
        raise NotImplementedError("a thread transport does not park its reader")

    def write_last(self, data: bytes) -> None:
        """Nothing can follow a write that timed out; otherwise the same as :meth:`write`."""
        self.write(data)

    def wait_for_room(self, timeout: float | None) -> bool:
        """Writes are synchronous: there is never a queue to wait for."""
        return True

    def flush(self, timeout: float | None) -> bool:
        """Writes are synchronous: wait only for one in progress."""
        acquired = self._lock.acquire(timeout=-1 if timeout is None else timeout)
        if acquired:
            self._lock.release()
        return acquired


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
