"""``takeover.Server``: a gevent WSGI server with node:http's ``upgrade`` event.

For an upgrade request with an ``upgrade`` listener, the server emits
``upgrade(request, socket, head)``: ``request`` is a werkzeug ``Request``,
``socket`` the connection (a gevent socket the listener now owns) and ``head``
exactly the bytes the server had buffered past the request headers. After the
listener the server neither reads nor closes that socket. Everything else goes
to the WSGI application, including upgrades no listener takes (Node >= 10).
"""

from __future__ import annotations

import logging
import socket as _socket
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import gevent.event
import gevent.socket
from gevent.pywsgi import WSGIHandler, WSGIServer
from werkzeug.wrappers import Request

from takeover.emitter import EventEmitter
from takeover.errors import HandshakeError
from takeover.protocol.handshake import header_tokens, rejection_for
from takeover.upgrade import _upgraded

__all__ = ["Server", "abort_handshake", "create_server"]

logger = logging.getLogger("takeover")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
HEAD_READ_SIZE = 1 << 20


def _not_found(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = b"Not Found\n"
    start_response(
        "404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    )
    return [body]


def abort_handshake(sock: Any, error: HandshakeError, linger: float = 1.0) -> None:
    """Answer ``error``'s status on ``sock`` and close it, as ``ws``'s abortHandshake does.

    The client may already have sent more (its first frames): those are read
    and dropped for up to ``linger`` seconds so the close does not turn into a
    reset that destroys the answer before the client reads it.
    """
    try:
        sock.sendall(rejection_for(error))
        sock.shutdown(_socket.SHUT_WR)
        sock.settimeout(linger)
        for _ in range(64):
            if not sock.recv(65536):
                break
    except OSError:
        pass
    finally:
        sock.close()


class _Handler(WSGIHandler):  # type: ignore[misc]
    """gevent's handler, with upgrade requests taken over instead of run as WSGI."""

    server: _GeventServer
    socket: Any
    rfile: Any
    environ: dict[str, Any]
    close_connection: bool

    def handle_one_response(self) -> None:
        owner = self.server.owner
        if owner._wants_upgrade(self.environ):
            self._take_over(owner)
            return
        super().handle_one_response()

    def _detach(self) -> tuple[Any, bytes]:
        """Take the socket away from gevent's handler, with the bytes it buffered."""
        sock = self.socket
        sock.settimeout(0.0)  # read what is buffered, never wait for more
        try:
            head = self.rfile.read1(HEAD_READ_SIZE)
        except OSError:
            head = b""
        owned = gevent.socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        # With the socket gone, handle() neither reads nor closes it.
        self.socket = None
        self.close_connection = True
        return owned, head

    def _take_over(self, owner: Server) -> None:
        request = Request(self.environ)
        sock, head = self._detach()
        try:
            owner.emit("upgrade", request, sock, head)
        except HandshakeError as error:
            abort_handshake(sock, error)
        except Exception:
            logger.exception("Exception in an 'upgrade' listener for %s", request.path)
            if sock not in _upgraded:
                sock.close()


class _GeventServer(WSGIServer):  # type: ignore[misc]
    handler_class = _Handler
    owner: Server


class Server(EventEmitter):
    """A WSGI server with node:http's events; build one with :func:`create_server`.

    Events: ``upgrade (request, socket, head)``, ``listening ()``, ``close ()``.
    ``should_upgrade(request) -> bool`` decides which upgrade requests are
    emitted (Node 24.9's ``shouldUpgradeCallback``); by default, all of them
    when an ``upgrade`` listener exists. The others go to ``app``.
    """

    def __init__(
        self,
        app: WSGIApp | None = None,
        *,
        should_upgrade: Callable[[Request], bool] | None = None,
        access_log: Any = None,
    ) -> None:
        super().__init__()
        self.app: WSGIApp = app or _not_found
        self.should_upgrade = should_upgrade
        self.access_log = access_log
        self._server: _GeventServer | None = None
        self._closed = gevent.event.Event()

    def _wants_upgrade(self, environ: dict[str, Any]) -> bool:
        # RFC 9110 §7.8: an upgrade is requested by an Upgrade header listed in Connection.
        if "HTTP_UPGRADE" not in environ or environ.get("REQUEST_METHOD") == "CONNECT":
            return False
        connection = environ.get("HTTP_CONNECTION", "")
        if "upgrade" not in (token.lower() for token in header_tokens(connection)):
            return False
        if self.should_upgrade is not None:
            return bool(self.should_upgrade(Request(environ)))
        return self.listener_count("upgrade") > 0

    def listen(self, port: int = 0, host: str = "127.0.0.1", *, backlog: int | None = None) -> Server:
        """Bind and start accepting (port 0 picks a free port); emits ``listening``."""
        if self._server is not None:
            raise RuntimeError("Server is already listening")
        server = _GeventServer((host, port), self.app, backlog=backlog, log=self.access_log)
        server.owner = self
        server.start()
        self._server = server
        self._closed.clear()
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

    def serve_forever(self) -> None:
        """Block (the calling greenlet) until :meth:`close`; listens on port 8000 if not yet listening."""
        if self._server is None:
            self.listen(8000)
        self._closed.wait()

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, wait up to ``timeout`` for HTTP requests in progress; emits ``close``."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stop(timeout=timeout)
        self._closed.set()
        self.emit("close")


def create_server(app: WSGIApp | None = None, **options: Any) -> Server:
    """Create a :class:`Server` for the WSGI ``app`` (node:http's ``createServer``)."""
    return Server(app, **options)
