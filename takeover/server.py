"""``takeover.Server``: a gevent WSGI server with node:http's events.

Events, with Node's names and arguments:

* ``connection (socket)`` for each accepted TCP connection;
* ``upgrade (request, socket, head)`` for an upgrade request when
  ``should_upgrade(request)`` says so (by default: an ``upgrade`` listener
  exists). ``request`` is a werkzeug ``Request``, ``socket`` the connection
  (the listener owns it now) and ``head`` exactly the bytes the server had
  buffered past the request headers;
* ``connect (request, socket, head)`` for the CONNECT method; with no listener
  the connection is closed, as in Node;
* ``clientError (error, socket)`` for a request that cannot be parsed; without a
  listener the answer is 400, 431 (headers too large) or 408 (headers too slow),
  each with ``Connection: close``;
* ``listening ()`` and ``close ()``.

Everything else goes to the WSGI application, including upgrades no listener
takes (Node >= 10) and in-app upgrades (``upgrade_websocket(request)`` in a view,
returning its response). After a takeover the server neither reads nor writes
nor closes that socket.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import gevent.event
import gevent.ssl
from gevent.pywsgi import WSGIServer
from werkzeug.wrappers import Request

from takeover._handler import TakeoverHandler
from takeover._io.registry import Registry
from takeover.emitter import EventEmitter
from takeover.options import DEFAULT_OPTIONS, UNSET, Compression, WebSocketOptions
from takeover.protocol.frames import SHUTDOWN_REASON, CloseCode
from takeover.protocol.handshake import reject_response
from takeover.protocol.origin import AllowedOrigins

__all__ = ["Server", "create_server"]

logger = logging.getLogger("takeover")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def format_address(host: str, port: int) -> str:
    """``HOST:PORT``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _not_found(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = b"Not Found\n"
    start_response(
        "404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    )
    return [body]


class _GeventServer(WSGIServer):  # type: ignore[misc]
    """gevent's WSGI server, told not to close the sockets that were taken over."""

    handler_class = TakeoverHandler
    owner: Server

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.tls_context: ssl.SSLContext | None = kwargs.get("ssl_context")
        super().__init__(*args, **kwargs)
        self.taken: set[Any] = set()

    def handle(self, sock: Any, address: Any) -> None:
        owner = self.owner
        if owner.max_connections is not None and owner.connection_count >= owner.max_connections:
            try:
                sock.sendall(reject_response(503, "Too many connections: try again later"))
            except OSError:
                pass
            return
        # gevent's WSGIServer.handle, with the handler counted (and known to close()) meanwhile.
        handler = self.handler_class(sock, address, self)
        owner._handlers.add(handler)
        try:
            owner._emit_safely("connection", sock)
            handler.handle()
        finally:
            owner._handler_done(handler)

    def do_close(self, sock: Any, *args: Any) -> None:
        if sock in self.taken:
            self.taken.discard(sock)
            return
        sock.close()

    def wrap_socket_and_handle(self, client_socket: Any, address: Any) -> None:
        # gevent closes the TLS socket when the handler returns; a taken-over
        # one belongs to its new owner.
        tls_socket = None
        try:
            # header_timeout covers the TLS handshake too: a client that connects
            # and never starts it would otherwise hold the connection for ever.
            with gevent.Timeout(self.owner.header_timeout, False):
                # gevent's SSLSocket, whatever the context's class: the standard
                # library's would do the handshake blocking the whole process
                # unless the ssl module is monkey-patched.
                tls_socket = gevent.ssl.SSLSocket(
                    sock=client_socket, server_side=True, _context=self.tls_context
                )
        except (ssl.SSLError, OSError) as error:
            logger.debug("TLS handshake with %s failed: %s", address, error)
        if tls_socket is None:
            client_socket.close()
            return
        try:
            self.handle(tls_socket, address)
        finally:
            self.do_close(tls_socket)


class Server(EventEmitter):
    """A gevent WSGI server with node:http's events; build one with :func:`create_server`.

    Options: ``should_upgrade(request) -> bool`` (Node 24.9's
    ``shouldUpgradeCallback``); ``certfile``/``keyfile`` or ``ssl_context`` to
    serve ``https``/``wss``; ``options``, the :class:`~takeover.options.WebSocketOptions`
    that the WebSockets upgraded from this server's requests (in-app or in
    listeners) start from, and three of them as shortcuts: ``idle_timeout``
    (None or 0: none; default 30 s); ``compression`` (``"deflate"`` or
    :class:`~takeover.DeflateOptions` to accept permessage-deflate; off by
    default); ``allowed_origins``, the origins whose pages may open those
    WebSockets (a list of exact origins or a function, as
    :func:`~takeover.upgrade_websocket` takes it; others get 403; None, the
    default, checks nothing);
    ``max_header_size`` (bytes, 431 beyond); ``header_timeout`` (seconds to
    receive a request's headers, 408 beyond); ``max_connections`` (HTTP
    connections plus open WebSockets; raw takeovers are not counted; 503
    beyond); ``access_log`` (a file-like object or logger, None for no access log).
    """

    def __init__(
        self,
        app: WSGIApp | None = None,
        *,
        should_upgrade: Callable[[Request], bool] | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        idle_timeout: float | None = UNSET,
        compression: Compression = UNSET,
        allowed_origins: AllowedOrigins = UNSET,
        options: WebSocketOptions | None = None,
        max_header_size: int = 16 * 1024,
        header_timeout: float | None = 60.0,
        max_connections: int | None = None,
        access_log: Any = None,
    ) -> None:
        super().__init__()
        self.app: WSGIApp = app or _not_found
        self.should_upgrade = should_upgrade
        self.certfile = certfile
        self.keyfile = keyfile
        self.ssl_context = ssl_context
        #: What the WebSockets upgraded from this server's requests start from.
        self.options = (options or DEFAULT_OPTIONS).replace(
            idle_timeout=idle_timeout, compression=compression, allowed_origins=allowed_origins
        )
        self.max_header_size = max_header_size
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.access_log = access_log
        self._server: _GeventServer | None = None
        self._closed = gevent.event.Event()
        #: The WebSockets taken over from this server's connections, until they close.
        self.registry = Registry()
        #: The handlers of HTTP connections (a keep-alive connection has one for all its requests).
        self._handlers: set[Any] = set()
        self._handlers_done: gevent.event.Event | None = None  # made by close() when it must wait
        #: True from close() on: kept-alive connections take no new request.
        self.closing = False

    # -- what the handler asks --------------------------------------------

    @property
    def connection_count(self) -> int:
        """Connections in HTTP handling plus WebSockets taken over and still open."""
        return len(self._handlers) + len(self.registry)

    def wants_upgrade(self, environ: dict[str, Any]) -> bool:
        """Whether an upgrade request goes to the ``upgrade`` event (else to the app)."""
        if self.should_upgrade is not None:
            return bool(self.should_upgrade(Request(environ, populate_request=False)))
        return self.listener_count("upgrade") > 0

    def _handler_done(self, handler: Any) -> None:
        self._handlers.discard(handler)
        if self._handlers_done is not None:
            self._handlers_done.set()

    def _emit_safely(self, event: str, *args: Any) -> None:
        try:
            self.emit(event, *args)
        except Exception:
            logger.exception("Exception in a %r listener", event)

    # -- lifecycle --------------------------------------------------------

    def _ssl_args(self) -> dict[str, Any]:
        if self.ssl_context is not None:
            return {"ssl_context": self.ssl_context}
        if self.certfile or self.keyfile:
            if not (self.certfile and self.keyfile):
                raise ValueError("TLS needs both certfile and keyfile")
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.certfile, self.keyfile)
            return {"ssl_context": context}
        return {}

    @property
    def secure(self) -> bool:
        """Whether the server speaks TLS (``https``/``wss``)."""
        return bool(self.ssl_context or self.certfile)

    def listen(self, port: int = 0, host: str = "127.0.0.1", *, backlog: int | None = None) -> Server:
        """Bind and start accepting (port 0 picks a free port); emits ``listening``.

        Raises :class:`OSError` when the address is in use, and
        :class:`OSError`/:class:`ssl.SSLError` for unreadable TLS files.
        """
        if self._server is not None:
            raise RuntimeError("Server is already listening")
        # A raw greenlet per connection: no links, no result, cheaper to start than a
        # gevent.Greenlet; close() tracks the handlers itself, so no pool is needed.
        server = _GeventServer(
            (host, port), self.app, backlog=backlog, log=self.access_log, spawn=gevent.spawn_raw,
            **self._ssl_args(),
        )
        server.owner = self
        server.start()
        self._server = server
        self._closed.clear()
        self.closing = False
        self.registry = Registry()  # a server listening again starts counting anew
        self.emit("listening")
        return self

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` the server listens on."""
        if self._server is None:
            raise RuntimeError("Server is not listening")
        host, port = self._server.address[:2]
        return host, port

    @property
    def listening(self) -> bool:
        """Whether the server accepts connections."""
        return self._server is not None

    @property
    def url(self) -> str:
        """``ws://HOST:PORT/`` (``wss://`` with TLS) for the address the server listens on."""
        return f"ws{'s' if self.secure else ''}://{format_address(*self.address)}/"

    def serve_forever(self, *, close_on: Iterable[int] = ()) -> None:
        """Block (the calling greenlet) until :meth:`close`; listens on port 8000 if not yet listening.

        ``close_on`` lists signals that call :meth:`close` (a graceful stop), as
        ``(signal.SIGINT, signal.SIGTERM)`` in a script.
        """
        if self._server is None:
            self.listen(8000)
        for signum in close_on:
            gevent.signal_handler(signum, self.close)
        self._closed.wait()

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every open WebSocket with 1001, then stop.

        Keep-alive connections waiting for their next request are closed at
        once (as Node's ``server.close()`` does since 19). Waits up to
        ``timeout`` seconds in all for the WebSockets' close handshakes and
        for HTTP requests in progress, whose connections then close; a request
        still running after that has its connection cut. Unlike Node's
        ``closeAllConnections``, WebSockets are not left open; sockets taken
        over raw (custom upgrades, CONNECT tunnels) belong to their listeners
        and are left to them, as in Node. Emits ``close``.
        """
        server, self._server = self._server, None
        if server is None:
            return
        deadline = time.monotonic() + timeout
        self.closing = True
        server.close()  # stop accepting
        for handler in self._other_handlers():
            handler.close_if_idle()
        self.registry.close_all(CloseCode.GOING_AWAY, SHUTDOWN_REASON, timeout)
        server.stop(timeout=max(deadline - time.monotonic(), 0.1))
        self._wait_for_requests(deadline)
        # Those upgraded meanwhile were closed as they came (the registry is closing): wait for them too.
        remaining = max(deadline - time.monotonic(), 0.0)
        self.registry.close_all(CloseCode.GOING_AWAY, SHUTDOWN_REASON, remaining)
        self._closed.set()
        self.emit("close")

    def _other_handlers(self) -> list[Any]:
        """The connections' handlers but the one running ``close()`` (a ``/shutdown`` view)."""
        current = gevent.getcurrent()
        return [handler for handler in self._handlers if handler.greenlet is not current]

    def _wait_for_requests(self, deadline: float) -> None:
        """Let requests in progress finish until ``deadline``, then cut their connections."""
        self._handlers_done = gevent.event.Event()
        for _ in range(100_000):  # each pass waits for a handler to end
            remaining = deadline - time.monotonic()
            if not self._other_handlers() or remaining <= 0:
                break
            self._handlers_done.clear()
            self._handlers_done.wait(remaining)
        self._handlers_done = None
        for handler in self._other_handlers():
            handler.abort()


def create_server(app: WSGIApp | None = None, **options: Any) -> Server:
    """Create a :class:`Server` for the WSGI ``app`` (node:http's ``createServer``)."""
    return Server(app, **options)
