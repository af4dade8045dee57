"""Blocking handlers: a function that reads and writes a WebSocket in a loop, off the request thread.

``upgrade_websocket(request, handler=fn)`` and ``takeover.flask_sock`` routes
run ``fn(ws)`` once the WebSocket is open, and close it when ``fn`` returns
(1000) or raises (1011, logged), as Flask-Sock does. Where the session's loop
runs the application's code (gevent), ``fn`` runs in a greenlet of it. Where
it does not (the I/O loop of threaded servers), ``fn`` runs in a thread of
its own, so the server's request thread is free as soon as the connection is
handed over; its ``receive()`` and ``send()`` reach the loop from there.

Each such thread is a cost: :data:`HANDLER_THREADS` caps how many run at once
in the process (``handler_threads``, set by the first WebSocket that has a
handler). The cap is taken at the upgrade, before the 101, so that an upgrade
beyond it is answered ``503 Service Unavailable`` rather than accepted and
then left without a thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from takeover.errors import ConnectionClosed, HandshakeError
from takeover.protocol.frames import CloseCode

if TYPE_CHECKING:
    from takeover._io.session import Session
    from takeover.websocket import WebSocket

__all__ = ["HANDLER_THREADS", "HandlerThreads", "run_handler", "start_handler"]

logger = logging.getLogger("takeover")


class HandlerThreads:
    """The process's count of handler threads, against its cap."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self.cap: int | None = None

    def reserve(self, cap: int) -> None:
        """Take a place for one handler, or raise a 503 :class:`HandshakeError` beyond the cap."""
        with self._lock:
            if self.cap is None:
                self.cap = cap
            if self.running >= self.cap:
                raise HandshakeError(
                    f"Too many WebSocket handlers are running in this process (handler_threads="
                    f"{self.cap}, each a thread): try again later. The server's operator can raise"
                    " handler_threads (an upgrade_websocket option, or SOCK_SERVER_OPTIONS for"
                    " Flask-Sock routes) or run more processes.",
                    status=503,
                    headers=[("Retry-After", "1")],
                )
            self.running += 1

    def release(self) -> None:
        with self._lock:
            self.running -= 1


#: The process's handler threads (see the module's docstring).
HANDLER_THREADS = HandlerThreads()


def run_handler(fn: Callable[[WebSocket], object], ws: WebSocket, path: str) -> None:
    """Run ``fn(ws)`` to its end, then close ``ws``: 1000 when it returns, 1011 when it raises."""
    try:
        fn(ws)
    except ConnectionClosed:
        pass
    except Exception:
        logger.exception("Exception in the WebSocket handler of %s", path)
        if ws.ready_state is ws.OPEN:
            ws.close(CloseCode.INTERNAL_ERROR)
        return
    if ws.ready_state is ws.OPEN:
        ws.close(CloseCode.NORMAL)


def start_handler(session: Session) -> None:
    """Start the session's handler (in the loop, once it is open): a thread, or a greenlet under gevent."""
    fn, ws, context = session.handler, session.ws, session.context
    assert fn is not None and ws is not None
    session.handler = None
    path = session.path

    def run() -> None:  # inside Flask's contexts of the upgrade, when it had them
        if context is None:
            run_handler(fn, ws, path)
        else:
            context.call_alone(run_handler, fn, ws, path)

    if session.loop.listener_pool is None:
        session.loop.spawn(run)
        return

    def in_thread() -> None:
        try:
            run()
        finally:
            HANDLER_THREADS.release()

    threading.Thread(target=in_thread, name=f"takeover-handler {path}", daemon=True).start()
