"""The takeover itself: one body object, for every server, that gives a connection to its session.

A server adapter (:mod:`takeover.adapters`) says only how its server gives up
a connection — a :class:`ServerConnection`: how to take the socket and the
bytes already read past the request (``take``), and how the 101 reaches the
client. Where the session lives was decided when it was made
(:func:`~takeover._io.loop.loop_for_caller`). :func:`take_over` and
:class:`TakeoverBody` do the rest the same way everywhere:

* **The server writes the 101** (``server_writes_101``): gunicorn's sync and
  gthread workers and uWSGI write the view's 101 as their own response. The
  body yields ``b""``, which makes the server write and flush it, and only then
  takes the connection. (Werkzeug adds ``Connection: close`` to its own: there
  the connection is taken before it writes anything, and the session writes
  the 101.)
* **During iteration, not in close().** Werkzeug drains the socket before it
  calls ``close()``, and uWSGI writes the headers of an empty body only
  after it.
* **Swap, not dup** (:func:`swap_out`). The servers shut the connection down
  when the request ends (gunicorn's ``close_graceful`` and Werkzeug's
  ``shutdown_request`` send FIN and drain what arrives; uWSGI closes its fd,
  or keeps it for the next request with ``--http11-socket``). The connection
  moves to a new descriptor, and the server is left with a dead socket:
  whatever it does with it then touches nothing the client sees.
* **Right away** (``returns``): takeover's own server and gunicorn's gevent
  workers let the application keep the socket outright; the takeover happens
  during the call and the application returns what the server expects.
* **In place** (``inline``): TLS state lives in the server's socket object and
  cannot move to another descriptor, and gevent.pywsgi writes after the body
  ends: the server's thread or greenlet waits in the body until the session
  ends.
"""

from __future__ import annotations

import enum
import os
import socket as _socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from takeover._io.stats import STATS

if TYPE_CHECKING:
    from takeover._io.registry import Registry
    from takeover._io.session import Session
    from takeover.websocket import WebSocket

__all__ = ["SWITCHING", "ServerConnection", "Start", "TakeoverBody", "swap_out", "take_over"]

#: The status line of a 101 response, as WSGI's ``start_response`` takes it.
SWITCHING = "101 Switching Protocols"


class Start(enum.Enum):
    """What goes to the server's ``start_response`` (its access log, and the 101 if it writes it)."""

    NOTHING = "nothing"  # the server is told nothing: it will write nothing on this connection
    BARE = "bare"  # 101 without headers, for the log: the session writes the real one
    HEADERS = "headers"  # 101 with the handshake's headers


@dataclass(frozen=True)
class ServerConnection:
    """How one server gives up one request's connection (see the module's docstring)."""

    #: The socket and the bytes the server read past the request's headers.
    take: Callable[[], tuple[Any, bytes]]
    start: Start = Start.HEADERS
    #: The server writes the 101 (the body yields ``b""`` first); else the session does.
    server_writes_101: bool = False
    #: The server's thread or greenlet waits in the body until the session ends.
    inline: bool = False
    #: Whether the session closes the socket at the end (else only shuts it down).
    owns_socket: bool = True
    #: The takeover happens during the application call, which then returns this.
    returns: Iterable[bytes] | None = None
    #: A registry of the server's, closed when it stops (else the session's own).
    registry: Registry | None = None


def take_over(ws: WebSocket, start_response: Callable[..., Any], found: ServerConnection) -> Iterable[bytes]:
    """Give the connection ``found`` describes to ``ws``; return what the WSGI app must return."""
    session = ws.session
    if found.server_writes_101:
        session.handshake_response = b""  # the server's response is the 101
    if found.start is Start.HEADERS:
        start_response(SWITCHING, session.response_headers)
    elif found.start is Start.BARE:
        start_response(SWITCHING, [])
    body = TakeoverBody(session, found)
    if found.returns is not None:
        body.take()
        return found.returns
    return body


class TakeoverBody:
    """The body of the 101 response: iterating it performs the takeover (see the module's docstring)."""

    def __init__(self, session: Session, found: ServerConnection) -> None:
        self.session = session
        self.found = found

    def __iter__(self) -> Iterator[bytes]:
        if self.found.server_writes_101:
            yield b""  # the server writes and flushes the 101 here
        self.take()

    def take(self) -> None:
        found = self.found
        sock, head = found.take()
        STATS.handed_over()
        self.session.attach(
            sock, head, inline=found.inline, owns_socket=found.owns_socket, registry=found.registry
        )


_dead: _socket.socket | None = None


def swap_out(fd: int) -> _socket.socket:
    """The connection on ``fd``, on a descriptor of its own; ``fd`` becomes a dead socket.

    ``dup2`` replaces the descriptor atomically, so the server's later
    ``recv`` sees end of stream, ``send`` fails with EPIPE, and ``shutdown``
    or ``close`` act on the dead socket alone. One dead socket (a pair whose
    other end is closed) serves every swap of the process.
    """
    global _dead
    moved = os.dup(fd)
    dead = _dead
    if dead is None or dead.fileno() < 0:
        dead, other = _socket.socketpair()
        other.close()
        _dead = dead
    os.dup2(dead.fileno(), fd, inheritable=False)
    return _socket.socket(fileno=moved)


# -- the rest of the adapter seam: what servers and the upgrade say of a WebSocket --------


def claim(ws: WebSocket, headers: list[tuple[str, str]] | None = None) -> None:
    """A server has been handed ``ws``'s 101 response (with ``headers``, if the view changed them)."""
    session = ws.session
    session.claim()
    if headers is not None and headers != session.response_headers:
        # The view or the framework added headers after the upgrade (Flask's session
        # cookie, a request id): they go out with the 101, as any response's would.
        from takeover.protocol.handshake import accept_response

        session.response_headers = headers
        session.handshake_response = accept_response(headers)


def is_claimed(ws: WebSocket) -> bool:
    """Whether a server has taken ``ws``'s response or socket."""
    return ws.session.claimed


def attach(ws: WebSocket, sock: Any, head: bytes = b"", *, owns_socket: bool = True) -> None:
    """Give ``sock`` and its ``head`` bytes to ``ws`` now (socket mode, and servers that detach)."""
    ws.session.attach(sock, head, owns_socket=owns_socket)


def abandon(ws: WebSocket) -> None:
    """``ws``'s 101 response was never returned: logged, and closed (as Deno does)."""
    ws.session.abandon()


def refuse(ws: WebSocket, message: str) -> None:
    """The server cannot give the connection up (answered 501): ``ws`` closes with 1006 and ``message``."""
    ws.session.refuse(message)


def handshake_response(ws: WebSocket) -> bytes:
    """The 101 ``ws`` will write itself (empty once written, or when the server writes it)."""
    return ws.session.handshake_response


def prepare(
    ws: WebSocket, headers: list[tuple[str, str]], context: Any, handler: Callable[[WebSocket], object] | None
) -> None:
    """What the upgrade knows of ``ws``: its 101's headers, Flask's contexts, and its blocking handler.

    A handler raises a 503 :class:`~takeover.errors.HandshakeError` when the
    process runs ``handler_threads`` of them already (takeover._io.handlers).
    """
    session = ws.session
    session.response_headers = headers
    session.context = context
    if handler is not None:
        session.set_handler(handler)

