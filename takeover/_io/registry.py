"""``Registry``: which WebSockets a server (or worker) owns, and which socket each took over.

A server keeps one and puts it in each request's environ under
:data:`REGISTRY_KEY`; :func:`takeover.upgrade_websocket` registers the
WebSocket it makes there, so the server counts its open WebSockets
(``max_connections``) and closes them with 1001 when it stops, and a socket
cannot be upgraded twice. WebSockets upgraded where no server set a registry
(gevent's pywsgi, Werkzeug, a socket of the application's own) go to
:data:`DEFAULT_REGISTRY`, the process's.

A WebSocket is in its registry from the moment it takes its socket over until
it is CLOSED. Nothing here keeps a WebSocket alive once it is closed.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from takeover.errors import InvalidStateError

if TYPE_CHECKING:
    from takeover.websocket import WebSocket

__all__ = ["DEFAULT_REGISTRY", "REGISTRY_KEY", "Registry", "close_all"]

#: The environ key under which a server leaves its :class:`Registry`.
REGISTRY_KEY = "takeover.registry"


class Registry:
    """The open WebSockets of one server, worker or process, by the socket each took over."""

    __slots__ = ("_by_socket", "_lock", "closing", "shutdown_reason")

    def __init__(self) -> None:
        self._by_socket: weakref.WeakKeyDictionary[Any, WebSocket] = weakref.WeakKeyDictionary()
        # Held only for a dict operation; sessions of several threads register here.
        self._lock = threading.Lock()
        #: Set by :meth:`close_all`: WebSockets registered from then on are closed at once.
        self.closing = False
        self.shutdown_reason = ""

    def add(self, sock: Any, ws: WebSocket) -> None:
        """Record that ``ws`` took ``sock`` over; raises if another WebSocket has it."""
        with self._lock:
            if sock in self._by_socket:
                raise InvalidStateError("Socket has already been upgraded to a WebSocket")
            self._by_socket[sock] = ws

    def discard(self, sock: Any) -> None:
        """Forget ``sock`` (its WebSocket is CLOSED)."""
        with self._lock:
            self._by_socket.pop(sock, None)

    def websocket_for(self, sock: Any) -> WebSocket | None:
        """The WebSocket ``sock`` was handed to, if it is still open."""
        return self._by_socket.get(sock)

    def open_websockets(self) -> list[WebSocket]:
        """Every WebSocket registered here that is not CLOSED yet."""
        with self._lock:
            websockets = list(self._by_socket.values())
        return [ws for ws in websockets if ws.ready_state != ws.CLOSED]

    def __len__(self) -> int:
        return len(self._by_socket)

    def __bool__(self) -> bool:
        # An empty registry is still a registry: `environ.get(REGISTRY_KEY) or DEFAULT`
        # must not swap a server's empty registry for the process's.
        return True

    def close_all(self, code: int, reason: str, timeout: float) -> None:
        """Close every open WebSocket with ``code``, and any registered later; wait up to ``timeout``."""
        self.closing = True
        self.shutdown_reason = reason
        close_all(self.open_websockets(), code, reason, timeout)


def close_all(websockets: Iterable[WebSocket], code: int, reason: str, timeout: float) -> None:
    """Start the close handshake of each, then wait up to ``timeout`` seconds in all."""
    websockets = list(websockets)
    deadline = time.monotonic() + timeout
    for ws in websockets:
        ws.close(code, reason)
    for ws in websockets:
        ws.wait_closed(max(deadline - time.monotonic(), 0.0))


#: The registry of WebSockets that no server registered.
DEFAULT_REGISTRY = Registry()
