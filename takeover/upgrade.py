"""``takeover.upgrade_websocket``: ``Deno.upgradeWebSocket`` for WSGI.

Two modes, as in Deno:

* **socket mode** (``socket=`` given, from a server's ``upgrade`` event): the
  101 is written over that socket by the WebSocket's own task, ``head`` is
  parsed before anything read from the socket, then ``open`` is dispatched.
* **response mode** (no ``socket``): nothing is written. The pending
  WebSocket is left in the WSGI environ under :data:`ENVIRON_KEY`; a server
  adapter that sees the returned 101 response calls :func:`complete_upgrade`
  with the connection's socket and buffered bytes.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, MutableMapping
from typing import Any, NamedTuple

from werkzeug.wrappers import Request, Response

from takeover.errors import HandshakeError, InvalidStateError
from takeover.protocol.connection import DEFAULT_MAX_MESSAGE_SIZE
from takeover.protocol.handshake import (
    accept_headers,
    accept_response,
    select_protocol,
    validate_request,
)
from takeover.websocket import WebSocket

__all__ = ["ENVIRON_KEY", "WebSocketUpgrade", "complete_upgrade", "upgrade_websocket"]

#: Where response mode leaves the pending WebSocket for the server adapter.
ENVIRON_KEY = "takeover.websocket"

Environ = MutableMapping[str, Any]

# Sockets already upgraded, so a second upgrade fails instead of corrupting the stream.
_upgraded: weakref.WeakKeyDictionary[Any, WebSocket] = weakref.WeakKeyDictionary()


class WebSocketUpgrade(NamedTuple):
    """What :func:`upgrade_websocket` returns: ``socket, response = ...``."""

    socket: WebSocket
    response: Response


def environ_headers(environ: Environ) -> Iterator[tuple[str, str]]:
    """The request headers of a WSGI environ (PEP 3333 ``HTTP_*`` keys)."""
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            yield key[5:].replace("_", "-"), value


def _request_url(environ: Environ) -> str:
    scheme = "wss" if environ.get("wsgi.url_scheme") == "https" else "ws"
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    query = environ.get("QUERY_STRING")
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


def _body_disturbed(request: Request | None, environ: Environ) -> bool:
    """Whether the request body was already read (Deno: a "disturbed" body)."""
    if request is not None:
        cached = request.__dict__
        if "_cached_data" in cached or "form" in cached or "_cached_json" in cached:
            return True
        stream = cached.get("stream")
        if stream is not None and getattr(stream, "_pos", 0) > 0:
            return True
    # gevent.pywsgi.Input counts what was read.
    return getattr(environ.get("wsgi.input"), "position", 0) > 0


def _socket_destroyed(sock: Any) -> bool:
    try:
        return bool(sock.fileno() < 0)
    except (OSError, ValueError):
        return True


def upgrade_websocket(
    request: Request | Environ,
    *,
    protocol: str | None = None,
    idle_timeout: float | None = 30,
    socket: Any = None,
    head: bytes = b"",
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    close_timeout: float = 10,
    max_queue: int = 64,
) -> WebSocketUpgrade:
    """Upgrade ``request`` (a werkzeug ``Request`` or a WSGI environ) to a WebSocket.

    Returns ``(socket, response)`` at once. ``protocol`` must be one the
    client offered. ``idle_timeout`` (seconds; 0 or None disables) pings
    after half of it passes in silence and closes with 1001 after all of it.
    ``socket``/``head`` perform the upgrade over a socket from a server's
    ``upgrade`` event; without them, return ``response`` from the WSGI view.
    Messages over ``max_message_size`` bytes close the connection with 1009.

    Raises :class:`HandshakeError` (with ``.status`` and ``.headers`` to
    answer) before anything is written, and :class:`InvalidStateError` for a
    socket that is closed or already upgraded.
    """
    if isinstance(request, Request):
        environ: Environ = request.environ
        werkzeug_request: Request | None = request
    else:
        environ, werkzeug_request = request, None
    handshake = validate_request(
        environ.get("REQUEST_METHOD", ""),
        environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
        environ_headers(environ),
    )
    chosen = select_protocol(handshake, protocol)
    if _body_disturbed(werkzeug_request, environ):
        raise HandshakeError(
            "Request body was already read (disturbed): upgrade before reading the body",
            status=400,
        )
    if socket is not None:
        if _socket_destroyed(socket):
            raise InvalidStateError("Socket is already destroyed - cannot upgrade to WebSocket")
        if socket in _upgraded:
            raise InvalidStateError("Socket has already been upgraded to a WebSocket")
    elif environ.get(ENVIRON_KEY) is not None:
        raise InvalidStateError("This request has already been upgraded to a WebSocket")

    headers = accept_headers(handshake, chosen)
    ws = WebSocket(
        handshake_response=accept_response(headers),
        url=_request_url(environ),
        protocol=chosen or "",
        idle_timeout=idle_timeout,
        max_message_size=max_message_size,
        close_timeout=close_timeout,
        max_queue=max_queue,
    )
    response = Response(status=101, headers=headers)
    del response.headers["Content-Type"]
    if socket is not None:
        _upgraded[socket] = ws
        ws._attach(socket, head)
    else:
        environ[ENVIRON_KEY] = ws
    return WebSocketUpgrade(ws, response)


def pending_upgrade(environ: Environ) -> WebSocket | None:
    """The WebSocket a view prepared in response mode, if any (for server adapters)."""
    ws = environ.get(ENVIRON_KEY)
    return ws if isinstance(ws, WebSocket) and not ws.attached else None


def complete_upgrade(environ: Environ, sock: Any, head: bytes = b"") -> WebSocket:
    """Hand ``sock`` and its buffered ``head`` bytes to the view's pending WebSocket.

    Server adapters call this after the application returned the 101
    response; the WebSocket writes the 101 itself, and the server must write
    nothing more on ``sock`` nor close it.
    """
    ws = pending_upgrade(environ)
    if ws is None:
        raise InvalidStateError("No pending WebSocket upgrade in this request")
    if sock in _upgraded:
        raise InvalidStateError("Socket has already been upgraded to a WebSocket")
    _upgraded[sock] = ws
    ws._attach(sock, head)
    return ws
