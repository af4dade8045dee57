"""``takeover.flask_sock``: Flask-Sock's API on takeover's engine; change the import line, nothing else.

::

    from takeover.flask_sock import Sock      # instead of: from flask_sock import Sock

    sock = Sock(app)                          # or Sock() and sock.init_app(app)

    @sock.route("/echo")                      # also bp=blueprint, and Flask's route options
    def echo(ws):
        while True:
            ws.send(ws.receive())

The route's function gets a ``ws`` with Flask-Sock's (simple-websocket's)
surface — ``send(data)``, ``receive(timeout=None)`` (None after the timeout),
``close(reason=None, message=None)``, ``connected`` — and runs, as under
Flask-Sock, inside the request's contexts, until it returns (then the
WebSocket closes with 1000) or the client goes (then :class:`ConnectionClosed`,
with the close's ``reason`` code and ``message``, ends it). It runs in a
greenlet of its own under gevent and a thread of its own elsewhere, on every
server takeover supports, and the server's request thread returns as soon as
the connection is handed over (``upgrade_websocket(handler=)``): a route holds
no gunicorn gthread or sync worker thread, and is not killed at ``--timeout``.
Each route on a threaded server is a thread: ``SOCK_SERVER_OPTIONS =
{"handler_threads": N}`` caps them per process (1000 by default); an upgrade
beyond it is answered 503. ``flask-sock`` need not be installed.

What changes for the app is behaviour only: the bytes a client sends with its
handshake are read, not lost; a silent connection is pinged and closed after
takeover's idle timeout (30 s unless ``SOCK_SERVER_OPTIONS`` sets
``ping_interval``); frames are checked as RFC 6455 says, and a handler that
raises closes the connection with 1011 instead of leaving it open.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from takeover.errors import ConnectionClosed as _TakeoverClosed
from takeover.protocol.connection import State
from takeover.websocket import WebSocket

__all__ = ["ConnectionClosed", "Sock", "SockWebSocket"]

logger = logging.getLogger("takeover")

NORMAL_CLOSURE = 1000
NO_STATUS_RCVD = 1005
INTERNAL_ERROR = 1011

#: simple-websocket's Server options that are about its own threads and buffers: nothing to do here.
_IGNORED_OPTIONS = frozenset({"receive_bytes", "thread_class", "event_class", "selector_class"})

try:  # so that `except simple_websocket.ConnectionClosed` in an unchanged app still catches it
    from simple_websocket import ConnectionClosed as _Base  # type: ignore[import-untyped]
except ImportError:
    _Base = Exception


class ConnectionClosed(_Base):  # type: ignore[misc]
    """The connection is closed: ``reason`` is the close code, ``message`` its text (or None)."""

    def __init__(self, reason: int = NO_STATUS_RCVD, message: str | None = None) -> None:
        self.reason = reason
        self.message = message
        Exception.__init__(self, f"Connection closed: {reason} {message or ''}")


class SockWebSocket:
    """What a Flask-Sock route gets: simple-websocket's ``Server`` surface over a takeover WebSocket."""

    def __init__(self, ws: WebSocket, environ: dict[str, Any]) -> None:
        #: The takeover WebSocket underneath, for what simple-websocket has no word for.
        self.websocket = ws
        self.environ = environ
        #: The subprotocol chosen in the handshake, or None.
        self.subprotocol: str | None = ws.protocol or None
        self.close_reason = NO_STATUS_RCVD
        self.close_message: str | None = None
        ws.add_event_listener("close", self._closed)

    def _closed(self, event: Any) -> None:
        self.close_reason, self.close_message = event.code, event.reason or None

    @property
    def connected(self) -> bool:
        """Whether messages can still be sent and received."""
        return self.websocket.ready_state is State.OPEN

    def send(self, data: Any) -> None:
        """Send ``data``: bytes-like as a binary message, anything else as text (``str(data)``)."""
        if not self.connected:
            raise ConnectionClosed(self.close_reason, self.close_message)
        self.websocket.send(data if isinstance(data, (bytes, bytearray, memoryview)) else str(data))

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        """The next message (``str`` or ``bytes``); None after ``timeout`` seconds without one."""
        try:
            data = self.websocket.receive(timeout)
        except TimeoutError:
            return None
        except _TakeoverClosed as closed:
            raise ConnectionClosed(closed.code, closed.reason or None) from None
        return bytes(data) if isinstance(data, bytearray) else data

    def close(self, reason: int | None = None, message: str | None = None) -> None:
        """Close with ``reason`` (a close code, 1000 by default) and ``message``."""
        if not self.connected:
            raise ConnectionClosed(self.close_reason, self.close_message)
        self.websocket.close(reason or NORMAL_CLOSURE, message or "")


def _upgrade_options(options: dict[str, Any], offered: str | None) -> dict[str, Any]:
    """``SOCK_SERVER_OPTIONS`` (simple-websocket's ``Server`` arguments) as upgrade_websocket's."""
    upgrade: dict[str, Any] = {}
    for name, value in options.items():
        if name == "ping_interval":
            if value:  # simple-websocket pings every ping_interval s; takeover after idle/2 of silence
                upgrade["idle_timeout"] = 2 * float(value)
        elif name in ("max_message_size", "handler_threads"):  # handler_threads: takeover's own
            upgrade[name] = value
        elif name == "subprotocols":
            wanted = [value] if isinstance(value, str) else list(value or ())
            client = [p.strip() for p in (offered or "").split(",") if p.strip()]
            chosen = next((p for p in client if p in wanted), None)  # the client's order, as simple-websocket
            if chosen is not None:
                upgrade["protocol"] = chosen
        elif name not in _IGNORED_OPTIONS:
            raise TypeError(f"SOCK_SERVER_OPTIONS has an option takeover does not know: {name!r}")
    return upgrade


def _run_route(handler: Callable[..., object], ws: SockWebSocket, args: tuple[Any, ...], kwargs: Any) -> None:
    """Run a route's function to its end, then close the WebSocket as Flask-Sock does."""
    websocket = ws.websocket
    try:
        handler(ws, *args, **kwargs)
    except ConnectionClosed:
        pass
    except Exception:
        logger.exception("Exception in the WebSocket route %s", ws.environ.get("PATH_INFO") or "/")
        if websocket.ready_state is State.OPEN:
            websocket.close(INTERNAL_ERROR)
        return
    if websocket.ready_state is State.OPEN:
        websocket.close(NORMAL_CLOSURE)


class Sock:
    """Flask-Sock's extension: ``Sock(app)`` or ``Sock()`` and :meth:`init_app`, then :meth:`route`."""

    def __init__(self, app: Any = None) -> None:
        self.app: Any = None
        self.bp: Any = None  # routes declared before init_app, on a blueprint of our own
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any) -> None:
        """Attach to ``app`` (and register the routes declared before)."""
        if self.bp is not None:
            app.register_blueprint(self.bp)
        self.app = app

    def route(
        self, path: str, bp: Any = None, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorate ``f(ws, *url_values)`` as the WebSocket route at ``path`` (on ``bp`` if given)."""

        def decorator(f: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(f)
            def websocket_route(*args: Any, **values: Any) -> Any:
                from flask import current_app, request

                from takeover.upgrade import upgrade_websocket

                configured = current_app.config.get("SOCK_SERVER_OPTIONS", {})
                options = _upgrade_options(configured, request.headers.get("Sec-WebSocket-Protocol"))
                ws: SockWebSocket | None = None

                def handler(websocket: WebSocket) -> None:  # once open: off the request's thread
                    assert ws is not None
                    _run_route(f, ws, args, values)

                websocket, response = upgrade_websocket(request, handler=handler, **options)
                ws = SockWebSocket(websocket, request.environ)
                return response

            kwargs["websocket"] = True
            if bp is not None:
                bp.route(path, **kwargs)(websocket_route)
            elif self.app is not None:
                self.app.route(path, **kwargs)(websocket_route)
            else:
                if self.bp is None:
                    from flask import Blueprint

                    self.bp = Blueprint("__takeover_flask_sock", __name__)
                self.bp.route(path, **kwargs)(websocket_route)
            return websocket_route

        return decorator
