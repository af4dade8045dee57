"""Byte transports over a connected socket: read, write without blocking the caller, close.

``write`` never blocks the caller on a slow peer. The gevent transport tries
one non-blocking ``send`` (no greenlet switch when the kernel has room, which
is nearly always) and leaves any remainder to a writer greenlet that drains a
queue in order; ``buffered_amount`` is the number of bytes in that queue, like
the DOM's ``bufferedAmount``. The thread transport writes under a lock.
"""

from __future__ import annotations

import collections
import socket as _socket
import threading
import time
from typing import Any

__all__ = ["GeventTransport", "ThreadTransport"]

READ_SIZE = 256 * 1024


class _BaseTransport:
    __slots__ = ("broken", "closed", "owns_socket", "sock")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.closed = False
        self.broken = False
        #: Whether :meth:`abort` closes the socket, or only shuts the connection
        #: down and leaves the socket object to the server that owns it.
        self.owns_socket = True

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
        """Send FIN after what is queued: the peer reads to the end, then sees EOF."""
        try:
            self.sock.shutdown(_socket.SHUT_WR)
        except OSError:
            pass

    def abort(self) -> None:
        """Close now; a reader blocked in ``recv`` wakes up with end of stream."""
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass
        if self.owns_socket:
            try:
                self.sock.close()
            except OSError:
                pass


class _Park(BaseException):
    """Thrown into a reader that waited ``PARK_AFTER`` seconds for data."""


class _Parker:
    """One repeating timer for the process, instead of a timeout per wait.

    Readers register while they wait for data; every ``interval`` seconds the
    timer throws :class:`_Park` into those that have waited at least that long.
    Registering is a dict insert, far cheaper than arming a timer per message.
    """

    def __init__(self, interval: float) -> None:
        import gevent

        self.interval = interval
        self.signal = _Park()
        self.waiting: dict[Any, tuple[float, Any]] = {}
        self._getcurrent = gevent.getcurrent
        self._timer: Any = None
        self._loop = gevent.get_hub().loop

    def wait_readable(self, transport: Any, sock: Any) -> bool:
        """Wait for ``sock`` to be readable; False if parked instead."""
        if self._timer is None:
            self._timer = self._loop.timer(self.interval, self.interval, ref=False)
            self._timer.start(self._sweep)
        waiting = self.waiting
        waiting[transport] = (time.monotonic(), self._getcurrent())
        try:
            sock._wait(sock._read_event)
        except _Park as signal:
            if signal is not self.signal:
                raise
            signal.__traceback__ = None  # it would keep this greenlet's frames alive
            return False
        finally:
            waiting.pop(transport, None)
        return True

    def _sweep(self) -> None:  # in the hub, like gevent.Timeout's expiry
        deadline = time.monotonic() - self.interval
        for transport, (since, reader) in list(self.waiting.items()):
            if since <= deadline and self.waiting.pop(transport, None) is not None:
                reader.throw(self.signal)


_parker: _Parker | None = None


class GeventTransport(_BaseTransport):
    """A gevent socket, written without blocking the calling greenlet.

    An idle connection costs no greenlet: a reader that has waited
    ``PARK_AFTER`` seconds without data is *parked* (``recv(park=True)``
    returns None and its greenlet ends; see :class:`_Parker`); :meth:`resume_when_readable` then
    starts a new one when data arrives. A waiting greenlet keeps its stack
    (about 8 KB measured here), which is most of an idle connection's cost.
    """

    __slots__ = (
        "_drained", "_draining", "_gevent", "_parked", "_pending", "_raw_recv", "_raw_send",
        "buffered_amount",
    )

    PARK_AFTER = 0.5

    def __init__(self, sock: Any) -> None:
        super().__init__(sock)
        import gevent

        self._gevent = gevent
        # The OS socket under gevent's wrapper is non-blocking: sending and
        # receiving on it directly never switch greenlets. TLS sockets have no
        # such shortcut, and are never parked.
        raw: Any = getattr(sock, "_sock", None)
        direct = raw is not None and not hasattr(sock, "context") and hasattr(sock, "_read_event")
        self._raw_send = raw.send if direct else None
        self._raw_recv = raw.recv if direct else None
        self._pending: collections.deque[bytes | memoryview] | None = None  # made when a write waits
        self._draining = False
        self._drained: Any = None  # an Event, made when a flush has to wait
        self._parked = False
        self.buffered_amount = 0

    def recv(self, park: bool = False) -> bytes | None:
        """Bytes from the peer, ``b""`` at the end; None when ``park`` and idle for a while."""
        raw_recv = self._raw_recv
        if raw_recv is None or not park:
            return super().recv()
        sock = self.sock
        for _ in range(2):  # one wait for readability; a spurious wake-up waits again
            try:
                data: bytes = raw_recv(READ_SIZE)
                return data
            except BlockingIOError:
                pass
            except OSError:
                return b""
            global _parker
            if _parker is None:
                _parker = _Parker(self.PARK_AFTER)
            try:
                if not _parker.wait_readable(self, sock):
                    return None
            except OSError:  # the socket was closed under us
                return b""
        return super().recv()

    def resume_when_readable(self, resume: Any) -> None:
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

    def write(self, data: bytes) -> None:
        """Queue ``data``; write at once what the kernel takes."""
        if self.closed or self.broken:
            return
        if not self._draining:
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
            if self._pending is None:
                self._pending = collections.deque()
            self._pending.append(memoryview(data)[sent:])
            self.buffered_amount += len(data) - sent
            self._draining = True
            self._gevent.spawn_raw(self._drain, self._pending)
            return
        assert self._pending is not None
        self._pending.append(data)
        self.buffered_amount += len(data)

    def _drain(self, pending: collections.deque[bytes | memoryview]) -> None:
        try:
            while pending and not self.closed:
                chunk = pending.popleft()
                self.sock.sendall(chunk)
                self.buffered_amount -= len(chunk)
        except OSError:
            self._break()
        finally:
            self._draining = False
            if self.closed or self.broken:
                pending.clear()
                self.buffered_amount = 0
            if self._drained is not None:
                self._drained.set()

    def _break(self) -> None:
        # The peer is gone: drop what is queued and wake the reader.
        self.broken = True
        if self._pending is not None:
            self._pending.clear()
        self.buffered_amount = 0
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass

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
    """A blocking socket shared by a reader thread and writers, one write at a time."""

    __slots__ = ("_lock", "buffered_amount")

    def __init__(self, sock: Any) -> None:
        super().__init__(sock)
        self._lock = threading.Lock()
        self.buffered_amount = 0

    def write(self, data: bytes) -> None:
        """Write ``data`` before returning (the caller's thread blocks)."""
        if self.closed or self.broken:
            return
        with self._lock:
            self.buffered_amount += len(data)
            try:
                self.sock.sendall(data)
            except OSError:
                self.broken = True
                try:
                    self.sock.shutdown(_socket.SHUT_RDWR)
                except OSError:
                    pass
            finally:
                self.buffered_amount -= len(data)

    def flush(self, timeout: float | None) -> bool:
        """Writes are synchronous: wait only for one in progress."""
        acquired = self._lock.acquire(timeout=-1 if timeout is None else timeout)
        if acquired:
            self._lock.release()
        return acquired
