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
from typing import Any

__all__ = ["GeventTransport", "ThreadTransport"]

READ_SIZE = 256 * 1024


class _BaseTransport:
    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.closed = False
        self.broken = False
        #: Whether :meth:`abort` closes the socket, or only shuts the connection
        #: down and leaves the socket object to the server that owns it.
        self.owns_socket = True

    def recv(self) -> bytes:
        """Bytes from the peer; ``b""`` at end of stream or on a dead connection."""
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


class GeventTransport(_BaseTransport):
    """A gevent socket, written without blocking the calling greenlet."""

    def __init__(self, sock: Any) -> None:
        super().__init__(sock)
        import gevent
        import gevent.event

        self._spawn = gevent.spawn
        # The OS socket under gevent's wrapper is non-blocking: sending on it
        # directly never switches greenlets. TLS sockets have no such shortcut.
        raw = getattr(sock, "_sock", None)
        self._raw_send = raw.send if raw is not None and not hasattr(sock, "context") else None
        self._pending: collections.deque[bytes | memoryview] = collections.deque()
        self._draining = False
        self._drained = gevent.event.Event()
        self._drained.set()
        self.buffered_amount = 0

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
            self._pending.append(memoryview(data)[sent:])
            self.buffered_amount += len(data) - sent
            self._draining = True
            self._drained.clear()
            self._spawn(self._drain)
            return
        self._pending.append(data)
        self.buffered_amount += len(data)

    def _drain(self) -> None:
        pending = self._pending
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
            self._drained.set()

    def _break(self) -> None:
        # The peer is gone: drop what is queued and wake the reader.
        self.broken = True
        self._pending.clear()
        self.buffered_amount = 0
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass

    def flush(self, timeout: float | None) -> bool:
        """Wait until everything queued is written; False on timeout."""
        return bool(self._drained.wait(timeout))


class ThreadTransport(_BaseTransport):
    """A blocking socket shared by a reader thread and writers, one write at a time."""

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
