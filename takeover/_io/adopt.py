"""Moving a socket from the thread that took it over into the loop its session lives in.

A session lives in one loop (:mod:`takeover._io.loop`). On threaded servers
the socket comes from a request thread as a plain socket (or a standard
library TLS socket), and the loop reads it with gevent, so it is moved:

* :func:`detach_for_loop` runs in the request thread: a plain socket gives up
  its descriptor (the object is then closed, and the server's later calls on it
  fail harmlessly); a TLS socket cannot, since its TLS state lives in that
  object, so the object itself moves, and the server's thread must leave it
  alone (the session runs ``inline``: the server's thread waits for its end).
* :func:`adopt` runs in the loop: a descriptor becomes a gevent socket of the
  loop's hub; a TLS socket is wrapped in :class:`CooperativeTLS`, which drives
  it non-blocking and waits for readiness on the hub, as gevent's own sockets
  do.
"""

from __future__ import annotations

import socket as _socket
import ssl
from typing import Any

__all__ = ["CooperativeTLS", "adopt", "detach_for_loop", "is_gevent_socket"]


def is_gevent_socket(sock: Any) -> bool:
    """Whether ``sock`` is one of gevent's cooperative sockets (plain or TLS)."""
    module = type(sock).__module__
    return module.startswith("gevent.") or module == "gevent"


class _Descriptor:
    __slots__ = ("family", "fd", "proto", "type")

    def __init__(self, sock: _socket.socket) -> None:
        self.family, self.type, self.proto = sock.family, sock.type, sock.proto
        self.fd = sock.detach()


def detach_for_loop(sock: Any, *, in_loop: bool) -> Any:
    """What :func:`adopt` takes in the loop, made from ``sock`` in the calling thread.

    ``in_loop``: the caller is the loop's thread, whose gevent sockets stay as they are.
    """
    if isinstance(sock, ssl.SSLSocket) or (in_loop and is_gevent_socket(sock)):
        return sock  # the same object: a gevent socket of that loop, or TLS state that cannot move
    if not is_gevent_socket(sock):
        sock.setblocking(True)  # its flags are the server's, which may have made it non-blocking
    return _Descriptor(sock)  # a plain socket, or a gevent socket of another thread's hub


def adopt(moved: Any) -> Any:
    """A socket of the calling loop's hub for what :func:`detach_for_loop` gave."""
    import gevent
    import gevent.socket

    if isinstance(moved, _Descriptor):
        return gevent.socket.socket(moved.family, moved.type, moved.proto, fileno=moved.fd)
    if isinstance(moved, ssl.SSLSocket):
        return CooperativeTLS(moved, gevent.get_hub())
    return moved


class CooperativeTLS:
    """A standard library TLS socket read and written from a gevent hub without blocking it.

    ``recv`` and ``send`` try the non-blocking call and, on ``SSLWantRead``
    or ``SSLWantWrite`` (RFC 8446 records may need either direction), wait for
    the descriptor on the hub and try again. Everything else is the wrapped
    socket's.
    """

    def __init__(self, tls: ssl.SSLSocket, hub: Any) -> None:
        tls.setblocking(False)
        self._tls = tls
        self._hub = hub
        #: What marks a TLS socket for the transport (no non-blocking shortcut, never parked).
        self.context = tls.context
        fd = tls.fileno()
        self._readable = hub.loop.io(fd, 1)
        self._writable = hub.loop.io(fd, 2)

    def recv(self, size: int) -> bytes:
        data: bytes = self._cooperatively(self._tls.recv, size)
        return data

    def send(self, data: Any) -> int:
        sent: int = self._cooperatively(self._tls.send, data)
        return sent

    def _cooperatively(self, call: Any, argument: Any) -> Any:
        """``call(argument)``, waiting on the hub for whichever direction TLS asks for."""
        for _ in range(1_000_000):  # each pass follows the descriptor's readiness
            try:
                return call(argument)
            except ssl.SSLWantReadError:
                self._hub.wait(self._readable)
            except ssl.SSLWantWriteError:
                self._hub.wait(self._writable)
        raise OSError("the TLS socket never became ready")

    def close(self) -> None:
        self._readable.close()
        self._writable.close()
        self._tls.close()

    def __getattr__(self, name: str) -> Any:  # shutdown, getpeername, setsockopt, fileno...
        return getattr(self._tls, name)
