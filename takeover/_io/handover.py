"""Handing a connection over from a request thread to the I/O loop (threaded and process servers).

On gunicorn's sync and gthread workers, uWSGI and Werkzeug's server, an
event-style WebSocket (its listeners attached, its response returned) must not
keep the request's thread. The view's response writes the 101 as the server's
own response; the body iterable then, after yielding ``b""`` (which makes the
server write and flush the headers), hands the connection over and ends, and
the server's thread is free.

Two things make that work on every one of those servers (each found by
experiment; see docs/guides/servers.rst):

* **Swap, not dup.** The servers shut the connection down when the request
  ends (gunicorn's ``close_graceful`` and Werkzeug's ``shutdown_request`` send
  FIN and drain what arrives; uWSGI closes its fd, or keeps it for the next
  request with ``--http11-socket``). :func:`swap_out` moves the connection to
  a new descriptor and leaves a dead socket on the server's: whatever the
  server does with it then touches nothing the client sees.
* **During iteration, not in close().** Werkzeug drains the socket before it
  calls ``close()``, and uWSGI writes the headers of an empty body only
  after it: the handover happens right after the first ``b""``.
"""

from __future__ import annotations

import os
import socket as _socket
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from takeover._io.listeners import ListenerPool, Mailbox
from takeover._io.loop import io_loop
from takeover.errors import InvalidStateError
from takeover.protocol.connection import State

if TYPE_CHECKING:
    from takeover._io.session import Session
    from takeover.websocket import WebSocket

__all__ = ["HandoverBody", "hand_over", "listener_pool", "send_from_thread", "swap_out"]


def swap_out(fd: int) -> _socket.socket:
    """The connection on ``fd``, on a descriptor of its own; ``fd`` becomes a dead socket.

    ``dup2`` replaces the descriptor atomically, so the server's later
    ``recv`` sees end of stream, ``send`` fails with EPIPE, and ``shutdown``
    or ``close`` act on the dead pair alone.
    """
    moved = os.dup(fd)
    dead, other = _socket.socketpair()
    try:
        os.dup2(dead.fileno(), fd, inheritable=False)
    finally:
        dead.close()
        other.close()
    return _socket.socket(fileno=moved)


_pool: ListenerPool | None = None
_pool_lock = threading.Lock()


def listener_pool(max_threads: int) -> ListenerPool:
    """The process's pool of listener threads (``max_threads`` applies when it is first made)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ListenerPool(max_threads)
        return _pool


def hand_over(ws: WebSocket, sock: _socket.socket, head: bytes) -> None:
    """Give ``sock`` (a plain socket that is ``ws``'s alone now) to the I/O loop, with its head bytes.

    The listeners of ``ws`` then run in the listener pool; the call returns at once.
    """
    loop = io_loop()
    session = ws.session
    session.loop = loop
    pool = listener_pool(session.options.listener_threads)
    session.mailbox = Mailbox(ws, pool, loop, context=session.context)
    session.registry = loop.registry
    sock.setblocking(True)  # its flags are the server's, which may have made it non-blocking
    fd = sock.detach()

    def attach() -> None:  # in the loop's thread: the gevent socket belongs to its hub
        import gevent.socket

        session.attach(gevent.socket.socket(fileno=fd), head)

    loop.call_soon_threadsafe(attach)


class HandoverBody:
    """The body of a 101 response that hands the connection over once the server has written it.

    ``take`` is called after the first ``b""`` has gone out (the server has
    written and flushed the 101); it returns the connection's socket, swapped
    out of the server's hands, and the bytes already read past the request.
    Where the server's own 101 is not usable (Werkzeug adds ``Connection:
    close``), ``server_writes_101`` is False: the connection is taken at once
    and the session writes takeover's 101; the server's goes to the dead socket.
    """

    def __init__(
        self, ws: WebSocket, take: Callable[[], tuple[_socket.socket, bytes]], *, server_writes_101: bool
    ) -> None:
        self.ws = ws
        self.take = take
        self.server_writes_101 = server_writes_101
        if server_writes_101:
            ws.session.handshake_response = b""  # the server's response is the 101

    def __iter__(self) -> Iterator[bytes]:
        if self.server_writes_101:
            yield b""  # the server writes and flushes the 101 here
        sock, head = self.take()
        hand_over(self.ws, sock, head)


def send_from_thread(session: Session, send: Callable[[Any], object], data: Any) -> None:
    """``send(data)`` called by another thread than the loop's: checked here, written there.

    The caller waits (up to ``send_timeout``) while more than the high-water
    mark is queued, as ``send()`` does in the loop; then the write goes to
    the loop, which alone touches the socket.
    """
    loop = session.loop
    assert loop is not None
    if not isinstance(data, (str, bytes, bytearray, memoryview)):
        raise TypeError(f"send() takes str or a bytes-like object, not {type(data).__name__}")
    if session.ready_state is State.CONNECTING:
        raise InvalidStateError("Failed to send: the WebSocket is still CONNECTING")
    transport = session.transport
    if transport is not None and transport.buffered_amount > transport.high_water:
        if not loop.run_sync(session.wait_for_room):
            return
    loop.call_soon_threadsafe(send, data if isinstance(data, (str, bytes)) else bytes(data))
