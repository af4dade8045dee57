"""In-app takeover: how each server we support gives up a request's connection.

When a view returns the response of ``upgrade_websocket(request)``, the server
calls it as a WSGI application; :func:`connection_for` then says, from facts
about the server in the environ, how to take the socket and the bytes the
server had buffered past the request headers (a
:class:`~takeover._io.handover.ServerConnection`), and
:func:`~takeover._io.handover.take_over` performs it, the same way for all:

* **takeover's server** puts a hook in the environ that detaches the socket.
* **gunicorn's gevent workers** (ours and stock ``-k gevent``): the socket is
  duplicated, its buffered bytes taken from gunicorn's parser, and the
  application returns gunicorn's ``ALREADY_HANDLED`` so it writes nothing.
* **gunicorn's sync and gthread workers** write the view's 101 themselves;
  then the connection is swapped out of their hands.
* **Werkzeug's development server**: the connection is swapped out before it
  writes anything (its own 101 adds ``Connection: close``).
* **uWSGI**: :mod:`takeover._uwsgi`.
* **gevent.pywsgi** writes a response after the application returns: the
  session runs inside the response body, in the request's greenlet, on a
  duplicate of the socket; when it ends the connection is shut down, so what
  the server writes then fails with EPIPE, which it treats as a client gone.

TLS sockets cannot be moved (the TLS state lives in the socket object): on
other servers than ours they are driven in place, while the request's thread
or greenlet waits.

Where the session runs was decided when it was made: in the request's own
gevent hub, or in takeover's I/O loop on threaded servers
(:func:`~takeover._io.loop.loop_for_caller`).
"""

from __future__ import annotations

import logging
import socket as _socket
import ssl
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from takeover._io import handover
from takeover._io.adopt import is_gevent_socket
from takeover._io.handover import ServerConnection, Start, swap_out
from takeover._log import warn_once
from takeover.errors import HandshakeError
from takeover.protocol.handshake import rejection_for

if TYPE_CHECKING:
    from takeover.websocket import WebSocket

logger = logging.getLogger("takeover")

__all__ = ["SUPPORTED_SERVERS", "TAKE_OVER_KEY", "abort_handshake", "connection_for", "take_over"]

TAKE_OVER_KEY = "takeover.take_over"
HEAD_READ_SIZE = 1 << 20


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


def read_buffered(sock: Any, reader: Any) -> bytes:
    """The bytes ``reader`` (a buffered reader over ``sock``) holds, without waiting for more."""
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        data: bytes = reader.read1(HEAD_READ_SIZE)
        return data
    except (OSError, ValueError):  # nothing buffered (TLS says "want read")
        return b""
    finally:
        sock.settimeout(timeout)


def _is_tls(sock: Any) -> bool:
    return isinstance(sock, ssl.SSLSocket) or hasattr(sock, "context")


def take_over(environ: dict[str, Any], start_response: Callable[..., Any], ws: WebSocket) -> Iterable[bytes]:
    """Give the request's connection to ``ws``; return what the WSGI app must return."""
    found = connection_for(environ, start_response)
    if found is None:
        return _not_implemented(environ, start_response, ws)
    return handover.take_over(ws, start_response, found)


def connection_for(environ: dict[str, Any], start_response: Callable[..., Any]) -> ServerConnection | None:
    """How this request's server gives up its connection, from facts in the environ (None: it cannot)."""
    hook = environ.get(TAKE_OVER_KEY)
    if hook is not None:
        return ServerConnection(hook, start=Start.NOTHING, returns=[])
    if "gunicorn.socket" in environ:
        return _gunicorn(environ, start_response)
    if "werkzeug.socket" in environ:
        sock = environ["werkzeug.socket"]
        rfile = environ["wsgi.input"]
        if _is_tls(sock):
            return _in_place(sock, read_buffered(sock, rfile))

        def take() -> tuple[Any, bytes]:
            head = read_buffered(sock, rfile)
            return swap_out(sock.fileno()), head

        # Werkzeug's own 101 adds "Connection: close", which strict clients refuse: the
        # connection is taken before it writes anything, and the session writes the 101.
        # start_response still runs, so the access log says 101; what Werkzeug writes
        # then goes to the dead socket (EPIPE, which it takes for a client gone).
        return ServerConnection(take)
    if "uwsgi.version" in environ:
        from takeover import _uwsgi

        return _uwsgi.connection_for(environ)
    rfile = _gevent_rfile(environ)
    if rfile is not None:
        sock = rfile.raw._sock
        return _in_place(sock, read_buffered(sock, rfile))
    return None


#: The servers on which takeover can take a connection over (in 501 answers and warnings).
SUPPORTED_SERVERS = (
    "takeover serve, gunicorn (-k takeover.gunicorn.Worker, gevent, sync or gthread), uWSGI,"
    " gevent.pywsgi or Werkzeug's development server"
)


def _server_name(environ: dict[str, Any]) -> str:
    if "waitress.client_disconnected" in environ:
        return "waitress"
    if "mod_wsgi.version" in environ:
        return "mod_wsgi"
    return str(environ.get("SERVER_SOFTWARE") or "this WSGI server")


def _not_implemented(
    environ: dict[str, Any], start_response: Callable[..., Any], ws: WebSocket
) -> Iterable[bytes]:
    """Answer 501: this server gives the application no access to the connection.

    One WARNING per server per process says the same; the request is not an
    error of the application (no traceback, no 500), and plain HTTP goes on.
    """
    server = _server_name(environ)
    message = (
        f"{server} gives no access to the connection, so it cannot switch to WebSocket:"
        f" run the app on {SUPPORTED_SERVERS}"
    )
    warn_once(f"501 {server}", "WebSocket upgrades are answered 501 Not Implemented: %s", message)
    handover.refuse(ws, message)
    body = f"501 Not Implemented: {message}\n".encode()
    # No Connection header: waitress refuses hop-by-hop headers from applications.
    start_response(
        "501 Not Implemented",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _gevent_rfile(environ: dict[str, Any]) -> Any:
    # gevent.pywsgi passes its buffered reader itself for upgrade requests,
    # and wraps it in an Input object otherwise.
    stream = environ.get("wsgi.input")
    reader = getattr(stream, "rfile", stream)
    raw = getattr(reader, "raw", None)
    return reader if raw is not None and hasattr(raw, "_sock") else None


def _gunicorn(environ: dict[str, Any], start_response: Callable[..., Any]) -> ServerConnection:
    sock = environ["gunicorn.socket"]
    unreader = environ["wsgi.input"].reader.unreader
    if hasattr(unreader, "take_buffered"):
        head = unreader.take_buffered()
    else:  # gunicorn < 23
        head = unreader.buf.getvalue()
        unreader.buf.seek(0)
        unreader.buf.truncate()
    # gunicorn's keep-alive loop would parse the next request from this
    # connection: mark the request as the last one (its Response knows it).
    request = getattr(getattr(start_response, "__self__", None), "req", None)
    if request is not None:
        request.must_close = True
    if _is_tls(sock):
        return _in_place(sock, head)
    if is_gevent_socket(sock):
        from gunicorn.workers.base_async import ALREADY_HANDLED

        return ServerConnection(lambda: (sock.dup(), head), start=Start.NOTHING, returns=ALREADY_HANDLED)
    # sync and gthread: gunicorn writes the 101 (it keeps Upgrade and Connection:
    # upgrade for a 101, adds no body), then the connection leaves.
    return ServerConnection(lambda: (swap_out(sock.fileno()), head), server_writes_101=True)


def _in_place(sock: Any, head: bytes) -> ServerConnection:
    """The session runs while the server's thread or greenlet waits in the body (module docstring)."""
    tls = _is_tls(sock)
    return ServerConnection(
        lambda: (sock if tls else sock.dup(), head), start=Start.BARE, inline=True, owns_socket=not tls
    )
