"""``takeover.legacy``: gevent-websocket applications, unchanged, on takeover's engine.

:class:`WebSocketHandler` replaces ``geventwebsocket.handler.WebSocketHandler``
as the ``handler_class`` of ``gevent.pywsgi.WSGIServer``::

    from gevent.pywsgi import WSGIServer
    from takeover.legacy import WebSocketHandler    # was: from geventwebsocket.handler import ...

    WSGIServer(("", 8000), app, handler_class=WebSocketHandler).serve_forever()

Applications see what gevent-websocket gave them: ``environ["wsgi.websocket"]``
(a :class:`LegacyWebSocket`, with gevent-websocket's ``receive``/``send``/``close``
API and exceptions), ``environ["wsgi.websocket_version"]``, ``ws.handler``,
``handler.server.clients`` and ``handler.active_client``; ``Resource`` and
``WebSocketApplication`` from gevent-websocket run as they are. Underneath, the
handshake is validated by takeover, and the connection is a
:class:`takeover.WebSocket` read in its own greenlet: RFC 6455 framing,
masking in C, a message size limit, an idle timeout and correct close codes.
The differences are listed in ``docs/guides/legacy.rst``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import gevent.event
from gevent.pywsgi import WSGIHandler
from geventwebsocket.exceptions import FrameTooLargeException, ProtocolError, WebSocketError
from geventwebsocket.server import WebSocketServer as _GeventWebSocketServer

from takeover._io import handover
from takeover._io.handover import SWITCHING
from takeover.adapters import read_buffered
from takeover.errors import ConnectionClosed, HandshakeError
from takeover.events import CloseEvent
from takeover.options import UNSET
from takeover.protocol.frames import SHUTDOWN_REASON, CloseCode
from takeover.protocol.handshake import Rejection, header_tokens, is_upgrade_request
from takeover.protocol.origin import AllowedOrigins
from takeover.upgrade import ENVIRON_KEY, upgrade_websocket
from takeover.websocket import WebSocket

__all__ = [
    "Client",
    "FrameTooLargeException",
    "LegacyWebSocket",
    "ProtocolError",
    "WebSocketError",
    "WebSocketHandler",
    "WebSocketServer",
]

logger = logging.getLogger("takeover.legacy")

# gevent-websocket's messages, for code that compares them.
MSG_SOCKET_DEAD = "Socket is dead"
MSG_ALREADY_CLOSED = "Connection is already closed"
MSG_CLOSED = "Connection closed"

_CLOSE_REASONS: dict[int, str] = {
    CloseCode.INTERNAL_ERROR: "Internal error", CloseCode.GOING_AWAY: SHUTDOWN_REASON
}


class Client:
    """An entry of ``handler.server.clients``: the peer's ``address`` and its ``ws``.

    A plain object, as gevent-websocket's is: applications keep their own
    attributes on it (``handler.active_client.nickname = ...``, as its chat
    example does).
    """

    def __init__(self, address: Any, ws: LegacyWebSocket) -> None:
        self.address = address
        self.ws = ws


class _NoApp:
    """``ws.current_app`` when the server's application has none (gevent-websocket's MockApp)."""

    def on_close(self, *args: Any) -> None:
        pass


class LegacyWebSocket:
    """``environ["wsgi.websocket"]``: gevent-websocket's WebSocket API over a :class:`takeover.WebSocket`.

    ``receive()`` returns ``str`` for a text message, ``bytearray`` for a binary
    one and ``None`` once the connection is closed (after which it raises
    :class:`WebSocketError`); ``send(message, binary=None)`` sends ``str`` as
    text and bytes-like as binary unless ``binary`` says otherwise, and raises
    :class:`WebSocketError` once the connection is no longer open; ``close(code,
    message)`` starts the close handshake. The takeover WebSocket underneath is
    :attr:`websocket`.
    """

    __slots__ = ("_close_event", "_closed", "environ", "handler", "websocket")

    OPCODE_CONTINUATION = 0x00
    OPCODE_TEXT = 0x01
    OPCODE_BINARY = 0x02
    OPCODE_CLOSE = 0x08
    OPCODE_PING = 0x09
    OPCODE_PONG = 0x0A

    def __init__(self, environ: dict[str, Any], websocket: WebSocket, handler: Any) -> None:
        self.environ = environ
        #: The :class:`takeover.WebSocket` this object drives.
        self.websocket = websocket
        self.handler = handler
        self._closed = False
        self._close_event: CloseEvent | None = None
        websocket.add_event_listener("close", self._record_close)

    def _record_close(self, event: CloseEvent) -> None:
        self._close_event = event

    def _dead(self) -> WebSocketError:
        """gevent-websocket's error for a write to a connection that is gone, with its close code."""
        event = self._close_event
        if event is not None:
            detail = f"connection closed with code {event.code}"
            if event.reason:
                detail += f" ({event.reason})"
        elif self.websocket.ready_state is WebSocket.CLOSING:
            detail = "connection closing"
        else:
            detail = "connection closed"
        return WebSocketError(f"{MSG_SOCKET_DEAD}: {detail}")

    # -- gevent-websocket's properties --------------------------------------

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called or ``receive()`` returned ``None``."""
        return self._closed

    @property
    def current_app(self) -> Any:
        app = getattr(self.handler.server.application, "current_app", None)
        return app if app is not None else _NoApp()

    @property
    def origin(self) -> str | None:
        return self.environ.get("HTTP_ORIGIN")

    @property
    def protocol(self) -> str | None:
        """The ``Sec-WebSocket-Protocol`` header the client sent, as gevent-websocket gives it."""
        return self.environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL")

    @property
    def version(self) -> str | None:
        return self.environ.get("HTTP_SEC_WEBSOCKET_VERSION")

    @property
    def path(self) -> str | None:
        return self.environ.get("PATH_INFO")

    @property
    def logger(self) -> Any:
        return self.handler.logger

    # -- receiving ----------------------------------------------------------

    def receive(self) -> str | bytearray | None:
        """The next message; ``None`` when the connection closed; then :class:`WebSocketError`."""
        if self._closed:
            self.current_app.on_close(MSG_ALREADY_CLOSED)
            raise WebSocketError(MSG_ALREADY_CLOSED)
        return self.read_message()

    def read_message(self) -> str | bytearray | None:
        """The next text or binary message, or ``None`` once the connection is closed."""
        try:
            message = _next_message(self.websocket, self._close_event)
        except ConnectionClosed as closed:
            self._closed = True
            if not closed.was_clean and closed.code == CloseCode.ABNORMAL:
                self.current_app.on_close(MSG_CLOSED)  # gevent-websocket: the socket failed
            return None
        if isinstance(message, bytes):  # binary_type is "bytearray": not expected
            return bytearray(message)
        return message

    # -- sending ------------------------------------------------------------

    def send(self, message: Any, binary: bool | None = None) -> None:
        """Send ``message``: binary if ``binary``, or (``binary=None``) unless it is a ``str``.

        Raises :class:`WebSocketError` ("Socket is dead", as gevent-websocket's
        does) after :meth:`close` or once :meth:`receive` returned ``None``, and
        as soon as the connection is no longer open: the peer closed it, its
        stream ended or was reset, or the server is closing it. Then the message
        names the close code (``Socket is dead: connection closed with code
        1006``), and it is how an application that only sends learns that its
        client has gone. Messages still queued for :meth:`receive` stay there.
        It also raises when a peer that does not read keeps more than the
        handler's ``high_water_mark`` queued for ``send_timeout`` seconds (the
        message is not sent; gevent-websocket's ``send`` would block for ever).
        """
        if self._closed:
            self.current_app.on_close(MSG_SOCKET_DEAD)
            raise WebSocketError(MSG_SOCKET_DEAD)
        if binary is None:
            binary = not isinstance(message, str)
        ws = self.websocket
        if ws.ready_state is not WebSocket.OPEN:
            self.current_app.on_close(MSG_SOCKET_DEAD)
            raise self._dead()
        try:
            ws.send(_binary(message) if binary else _text(message))
        except TimeoutError as error:
            raise WebSocketError(str(error)) from error
        if ws.ready_state is not WebSocket.OPEN:
            # The write failed (the peer reset the connection) or it closed while send() waited for room.
            self.current_app.on_close(MSG_SOCKET_DEAD)
            raise self._dead()

    def send_frame(self, message: Any, opcode: int) -> None:
        """Send one frame with ``opcode`` (text, binary, ping, pong or close)."""
        if self._closed:
            self.current_app.on_close(MSG_ALREADY_CLOSED)
            raise WebSocketError(MSG_ALREADY_CLOSED)
        ws = self.websocket
        if opcode in (self.OPCODE_PING, self.OPCODE_PONG) and ws.ready_state is not WebSocket.OPEN:
            raise self._dead()
        if opcode == self.OPCODE_TEXT:
            self.send(message, binary=False)
        elif opcode == self.OPCODE_BINARY:
            self.send(message, binary=True)
        elif opcode == self.OPCODE_PING:
            ws.ping(bytes(_binary(message)))
        elif opcode == self.OPCODE_PONG:
            ws.pong(bytes(_binary(message)))
        elif opcode == self.OPCODE_CLOSE:
            payload = _binary(message)
            if len(payload) >= 2:
                self.close(int.from_bytes(payload[:2], "big"), payload[2:])
            else:
                self.close()
        else:
            raise ProtocolError(f"Unexpected opcode={opcode!r}")

    def close(self, code: int = 1000, message: Any = b"") -> None:
        """Start the close handshake with ``code`` and ``message`` (the reason, at most 123 bytes).

        ``code`` must be one an endpoint may send (1000, 1001, 1003, 1007-1011,
        3000-4999...), else :class:`ValueError`.
        """
        if self._closed:
            self.current_app.on_close(MSG_ALREADY_CLOSED)
            return
        reason = message.decode("utf-8", "replace") if isinstance(message, (bytes, bytearray)) else message
        self.websocket.close(code, str(reason or ""))
        self._closed = True

    def __repr__(self) -> str:
        return f"<LegacyWebSocket {self.path} {self.websocket.ready_state.name}>"


def _next_message(ws: WebSocket, close: CloseEvent | None) -> str | bytes | bytearray:
    """``ws.receive()``, and :class:`ConnectionClosed` at once when ``ws`` is CLOSED.

    A WebSocket that closed before anything was queued for ``receive()`` (an
    application that only sends never calls it) may have no queue to end:
    ``receive()`` would wait for ever. Once it is CLOSED nothing more can
    arrive, so a queue that is empty right now (the zero timeout) means the
    connection's end. ``close`` is its close event.
    """
    if ws.ready_state is not WebSocket.CLOSED:
        return ws.receive()
    try:
        return ws.receive(timeout=0)
    except TimeoutError:
        if close is None:
            raise ConnectionClosed(CloseCode.ABNORMAL, "", was_clean=False) from None
        raise ConnectionClosed(close.code, close.reason, close.was_clean) from None


def _binary(message: Any) -> bytes | bytearray | memoryview:
    if isinstance(message, (bytes, bytearray, memoryview)):
        return message
    if isinstance(message, str):
        return message.encode("utf-8")
    return bytes(message)  # gevent-websocket's conversion; TypeError for None


def _text(message: Any) -> str:
    if isinstance(message, str):
        return message
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message).decode("utf-8")
    return str(message or "")


class WebSocketHandler(WSGIHandler):  # type: ignore[misc]
    """A ``handler_class`` for ``gevent.pywsgi.WSGIServer`` serving gevent-websocket apps.

    A WebSocket request is validated with takeover's handshake (a bad one is
    answered with its 400, 405 or 426); the connection is handed to a
    :class:`takeover.WebSocket`, read in its own greenlet, and the application
    runs in this greenlet with ``environ["wsgi.websocket"]``. When it returns,
    the WebSocket is closed with 1000 (1011 if it raised) and nothing else is
    written. Other requests are plain WSGI.

    The options are class attributes; subclass to change them.
    """

    # The options of takeover.options.WebSocketOptions, as class attributes:
    # UNSET keeps the server's setting (if one is in the environ), else the default.
    #: Ping after half of this many seconds of silence, close with 1001 after all of it (None: never).
    idle_timeout: float | None = UNSET
    #: Messages over this many bytes close the connection with 1009 (None: no limit).
    max_message_size: int | None = UNSET
    #: Seconds to wait for the peer's answer to a close.
    close_timeout: float = UNSET
    #: Messages queued for ``receive()`` before reading pauses.
    max_queue: int = UNSET
    #: The origins whose pages may connect (others get 403), as ``upgrade_websocket``'s
    #: ``allowed_origins``: a list, or a method ``allowed_origins(self, origin) -> bool``.
    allowed_origins: AllowedOrigins = UNSET
    #: ``send()`` waits while more than this many bytes are queued for a slow peer (None: never).
    high_water_mark: int | None = UNSET
    #: Seconds ``send()`` waits for such a peer before raising :class:`WebSocketError`.
    send_timeout: float | None = UNSET
    #: Bytes queued behind the frame being written (by sends that do not wait) before closing with 1008.
    max_buffered_amount: int | None = UNSET

    websocket: LegacyWebSocket | None = None
    prevent_wsgi_call = False

    server: Any
    socket: Any
    rfile: Any
    environ: dict[str, Any]
    application: Callable[..., Any]
    client_address: Any
    close_connection: bool

    @property
    def logger(self) -> Any:
        server_logger = getattr(self.server, "logger", None)
        return server_logger if server_logger is not None else logger

    @property
    def active_client(self) -> Client:
        """This connection's entry in ``server.clients``."""
        client: Client = self.server.clients[self.client_address]
        return client

    def run_application(self) -> Any:
        hook = getattr(self.server, "pre_start_hook", None)
        if hook and hook(self):
            return super().run_application()
        environ = self.environ
        if not is_upgrade_request(environ.get("HTTP_UPGRADE"), environ.get("HTTP_CONNECTION"), "websocket"):
            return super().run_application()
        self._run_websocket()
        return None

    # -- the WebSocket request ----------------------------------------------

    def _select_protocol(self, environ: dict[str, Any]) -> str | None:
        # gevent-websocket asks the application (a Resource) for the path's protocol.
        app_protocol = getattr(self.application, "app_protocol", None)
        if app_protocol is None:
            return None
        allowed = app_protocol(environ.get("PATH_INFO", ""))
        offered = header_tokens(environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", ""))
        return allowed if allowed and allowed in offered else None

    def _run_websocket(self) -> None:
        environ = self.environ
        try:
            ws, _ = upgrade_websocket(
                environ,
                protocol=self._select_protocol(environ),
                idle_timeout=self.idle_timeout,
                max_message_size=self.max_message_size,
                close_timeout=self.close_timeout,
                max_queue=self.max_queue,
                allowed_origins=self.allowed_origins,
                high_water_mark=self.high_water_mark,
                send_timeout=self.send_timeout,
                max_buffered_amount=self.max_buffered_amount,
            )
        except HandshakeError as error:
            self._reject(error)
            return
        environ.pop(ENVIRON_KEY, None)
        handover.claim(ws)  # this handler writes the 101 through the WebSocket
        ws.binary_type = "bytearray"
        self.close_connection = True  # no request follows a WebSocket on this connection
        self.code = 101
        self._orig_status = SWITCHING
        self.status = SWITCHING.encode("latin-1")
        self.response_length = len(handover.handshake_response(ws))
        self.headers_sent = True  # gevent must not answer anything on this connection now

        legacy = LegacyWebSocket(environ, ws, self)  # before the attach: it records how ws closes
        opened = gevent.event.Event()
        ws.add_event_listener("open", lambda _event: opened.set())
        ws.add_event_listener("close", lambda _event: opened.set())
        handover.attach(ws, self.socket, read_buffered(self.socket, self.rfile), owns_socket=False)
        opened.wait()  # the 101 is written (or the peer is gone) before the app runs

        environ["wsgi.websocket_version"] = environ.get("HTTP_SEC_WEBSOCKET_VERSION", "13")
        environ["wsgi.websocket"] = legacy
        self.websocket = legacy
        server = self.server
        if not hasattr(server, "clients"):
            server.clients = {}
        address = self.client_address
        server.clients[address] = Client(address, legacy)
        code = CloseCode.NORMAL
        try:
            if not self.prevent_wsgi_call:
                result = self.application(environ, lambda status, headers, exc_info=None: [])
                try:
                    for _ in result:
                        pass
                finally:
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()
        except WebSocketError:
            # Sending after the close: how gevent-websocket applications usually end.
            logger.debug("WebSocketError in the application after the close", exc_info=True)
        except Exception:
            logger.exception("Error in WebSocket application %s", environ.get("PATH_INFO"))
            code = CloseCode.INTERNAL_ERROR
        except BaseException:  # GreenletExit: the server is stopping
            code = CloseCode.GOING_AWAY
            raise
        finally:
            if server.clients.get(address) is not None and server.clients[address].ws is legacy:
                del server.clients[address]
            self._end_session(ws, code)
            environ["wsgi.websocket"] = None
            self.websocket = None

    def _end_session(self, ws: WebSocket, code: int) -> None:
        """Close ``ws`` if the application left it open, and wait until it is CLOSED.

        Messages still queued are dropped (a full queue would keep the reader
        from seeing the peer's answering close).
        """
        if ws.ready_state is WebSocket.OPEN:
            ws.close(code, _CLOSE_REASONS.get(code, ""))
        deadline = time.monotonic() + ws.close_timeout + 1.0
        while ws.ready_state is not WebSocket.CLOSED:  # CLOSED: nothing left to wait for
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                ws.receive(timeout=remaining)
            except (ConnectionClosed, TimeoutError):
                break

    def _reject(self, error: HandshakeError) -> None:
        answer = Rejection.for_error(error)
        self.close_connection = True
        self.start_response(answer.status_line, answer.headers)
        self.write(answer.body)


class WebSocketServer(_GeventWebSocketServer):  # type: ignore[misc]
    """``geventwebsocket.WebSocketServer`` with takeover's :class:`WebSocketHandler`."""

    handler_class = WebSocketHandler
