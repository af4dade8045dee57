"""In-app takeover: find the connection behind a WSGI request, on each server we support.

When a view returns the response of ``upgrade_websocket(request)``, the server
calls it as a WSGI application; :func:`take_over` then finds the socket and
the bytes the server had buffered past the request headers, hands them to the
WebSocket, and makes sure the server writes nothing more on that connection:

* **takeover's server** puts a hook in the environ that detaches the socket.
* **gunicorn's gevent workers** (ours and stock ``-k gevent``): the socket is
  duplicated, its buffered bytes taken from gunicorn's parser, and the
  application returns gunicorn's ``ALREADY_HANDLED`` so it writes nothing.
* **gevent.pywsgi** and **Werkzeug's development server** write a response
  after the application returns. The session runs inside the response
  iterable, in the request's greenlet or thread, on a duplicate of the socket;
  when it ends the connection is shut down, so what the server writes then
  fails with EPIPE, which both treat as a client that went away.

TLS sockets cannot be duplicated (the TLS state lives in the socket object):
on other servers than ours they are driven in place, inside the response.
"""

from __future__ import annotations

import logging
import socket as _socket
import ssl
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from takeover._io.handover import HandoverBody, swap_out
from takeover._log import warn_once
from takeover.errors import HandshakeError
from takeover.protocol.handshake import rejection_for

if TYPE_CHECKING:
    from takeover.websocket import WebSocket

logger = logging.getLogger("takeover")

__all__ = ["SUPPORTED_SERVERS", "TAKE_OVER_KEY", "abort_handshake", "take_over"]

TAKE_OVER_KEY = "takeover.take_over"
HEAD_READ_SIZE = 1 << 20
SWITCHING = "101 Switching Protocols"


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
    hook = environ.get(TAKE_OVER_KEY)
    if hook is not None:
        sock, head = hook()
        ws.session.attach(sock, head)
        return []
    if "gunicorn.socket" in environ:
        return _gunicorn(environ, start_response, ws)
    if "werkzeug.socket" in environ:
        sock = environ["werkzeug.socket"]
        if _can_hand_over(ws, sock, environ):
            return _werkzeug_handover(start_response, ws, sock, environ["wsgi.input"])
        return _in_place(start_response, ws, sock, read_buffered(sock, environ["wsgi.input"]))
    if "uwsgi.version" in environ:
        from takeover import _uwsgi

        return _uwsgi.take_over(environ, start_response, ws, event_style=_can_hand_over(ws, None, environ))
    rfile = _gevent_rfile(environ)
    if rfile is not None:
        sock = rfile.raw._sock
        return _in_place(start_response, ws, sock, read_buffered(sock, rfile))
    return _not_implemented(environ, start_response, ws)


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
    ws.session.refuse(message)
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


def _gunicorn(environ: dict[str, Any], start_response: Callable[..., Any], ws: WebSocket) -> Iterable[bytes]:
    sock = environ["gunicorn.socket"]
    unreader = environ["wsgi.input"].reader.unreader
    if hasattr(unreader, "take_buffered"):
        head = unreader.take_buffered()
    else:  # gunicorn < 23
        head = unreader.buf.getvalue()
        unreader.buf.seek(0)
        unreader.buf.truncate()
    from takeover._io.runtime import is_gevent_socket

    # gunicorn's keep-alive loop would parse the next request from this
    # connection: mark the request as the last one (its Response knows it).
    request = getattr(getattr(start_response, "__self__", None), "req", None)
    if request is not None:
        request.must_close = True
    if is_gevent_socket(sock) and not _is_tls(sock):
        from gunicorn.workers.base_async import ALREADY_HANDLED

        ws.session.attach(sock.dup(), head)
        result: Iterable[bytes] = ALREADY_HANDLED
        return result
    if _can_hand_over(ws, sock, environ):
        # sync and gthread: gunicorn writes the 101 (it keeps Upgrade and
        # Connection: upgrade for a 101, adds no body), then the connection leaves.
        start_response(SWITCHING, ws.session.response_headers)
        return HandoverBody(ws, lambda: (swap_out(sock.fileno()), head), server_writes_101=True)
    if not environ.get("wsgi.multithread") and not _is_tls(sock):
        _warn_blocking_on_sync_worker()
    return _in_place(start_response, ws, sock, head)


def _can_hand_over(ws: WebSocket, sock: Any, environ: dict[str, Any]) -> bool:
    """Whether the session can leave the request thread for takeover's I/O loop.

    Event-style only (a ``message`` listener is attached: ``receive()`` keeps
    its thread), over plain TCP (TLS state cannot move to another socket), on
    HTTP/1.1 (an HTTP/2 stream shares its connection with others).
    """
    return (
        ws.has_listeners("message")
        and not _is_tls(sock)
        and environ.get("SERVER_PROTOCOL", "HTTP/1.1") in ("HTTP/1.1", "HTTP/1.0")
    )


def _werkzeug_handover(
    start_response: Callable[..., Any], ws: WebSocket, sock: Any, rfile: Any
) -> Iterable[bytes]:
    # Werkzeug's own 101 adds "Connection: close", which strict clients refuse: the
    # connection is taken before it writes anything, and the session writes the 101.
    # start_response still runs, so the access log says 101; what Werkzeug writes
    # then goes to the dead socket (EPIPE, which it takes for a client gone).
    start_response(SWITCHING, ws.session.response_headers)

    def take() -> tuple[Any, bytes]:
        head = read_buffered(sock, rfile)
        return swap_out(sock.fileno()), head

    return HandoverBody(ws, take, server_writes_101=False)


def _warn_blocking_on_sync_worker() -> None:
    warn_once(
        "blocking on a sync worker",
        "A WebSocket without a message listener (receive() or 'for message in ws') holds this"
        " gunicorn sync worker for as long as it is open, and the arbiter kills the worker at"
        " --timeout. Attach listeners instead (ws.onmessage = ...), or run -k gthread or"
        " -k takeover.gunicorn.Worker. This is logged once per process."
    )


def _in_place(start_response: Callable[..., Any], ws: WebSocket, sock: Any, head: bytes) -> Iterable[bytes]:
    tls = _is_tls(sock)
    start_response(SWITCHING, [])
    return _Session(ws, sock if tls else sock.dup(), head, owns_socket=not tls)


class _Session:
    """A response body that is the WebSocket session itself: iterating runs it."""

    def __init__(self, ws: WebSocket, sock: Any, head: bytes, *, owns_socket: bool) -> None:
        self.ws = ws
        self.sock = sock
        self.head = head
        self.owns_socket = owns_socket

    def __iter__(self) -> Iterator[bytes]:
        self.ws.session.attach(self.sock, self.head, inline=True, owns_socket=self.owns_socket)
        return iter(())
