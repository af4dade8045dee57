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

import functools
import logging
import sys
import weakref
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any, NamedTuple, cast

from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from takeover._io import handover
from takeover._io.ending import access_logger
from takeover._io.registry import DEFAULT_REGISTRY, REGISTRY_KEY, Registry
from takeover._io.stats import STATS
from takeover.adapters import take_over
from takeover.errors import HandshakeError, InvalidStateError
from takeover.options import (
    DEFAULT_OPTIONS,
    OPTIONS_KEY,
    UNSET,
    Compression,
    WebSocketOptions,
)
from takeover.protocol.deflate import negotiate
from takeover.protocol.handshake import (
    Rejection,
    accept_headers,
    accept_response,
    select_protocol,
    validate_collected,
)
from takeover.protocol.origin import AllowedOrigins
from takeover.websocket import WebSocket

__all__ = [
    "ENVIRON_KEY",
    "HTTPHandshakeError",
    "UpgradeResponse",
    "WebSocketUpgrade",
    "complete_upgrade",
    "upgrade_websocket",
]

#: Where response mode leaves the pending WebSocket for the server adapter.
ENVIRON_KEY = "takeover.websocket"
Environ = MutableMapping[str, Any]



class WebSocketUpgrade(NamedTuple):
    """What :func:`upgrade_websocket` returns: ``socket, response = ...``."""

    socket: WebSocket
    response: Response


class HTTPHandshakeError(HandshakeError, HTTPException):
    """A :class:`HandshakeError` that Flask and werkzeug answer with its own status.

    Raised by :func:`upgrade_websocket`, so a view that lets it propagate
    gives the client 400/403/405/426 instead of a 500.
    """

    def __init__(self, error: HandshakeError) -> None:
        HandshakeError.__init__(self, str(error.args[0]), status=error.status, headers=error.headers)
        self.code = error.status
        self.description = str(error.args[0])
        self.response = None

    def __str__(self) -> str:
        return str(self.args[0])

    def get_body(self, environ: Any = None, scope: Any = None) -> str:
        return Rejection.for_error(self).body.decode("utf-8")

    def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
        return Rejection.for_error(self).app_headers


class SwitchingProtocols(Response):
    """A ``101 Switching Protocols`` response: no body, so no ``Content-Type`` either."""

    default_mimetype = None


_STATUS_101 = SwitchingProtocols(status=101)._status


def _switching_protocols(
    headers: list[tuple[str, str]], cls: type[SwitchingProtocols] | None = None
) -> SwitchingProtocols:
    """``cls(status=101, headers=headers)`` without Response.__init__'s generic work.

    werkzeug's constructor (status parsing, content-type defaults) cost about
    3.6 us of a handshake. A class with a constructor of its own gets it called.
    """
    cls = cls or SwitchingProtocols
    if cls.__init__ is not Response.__init__:
        return cls(status=101, headers=headers)
    # accept_headers made the values (no line breaks to refuse): Headers without its checks.
    werkzeug_headers = Headers()
    werkzeug_headers._list = headers
    response = cls.__new__(cls)
    response.__dict__.update(
        headers=werkzeug_headers, _status=_STATUS_101, _status_code=101, direct_passthrough=False,
        _on_close=[], response=[],
    )
    return response


class UpgradeResponse(SwitchingProtocols):
    """The 101 response of response mode; calling it as a WSGI app performs the takeover.

    Inside a Flask request it is made a subclass of the app's own
    ``response_class`` too, so Flask passes it through unconverted.
    """

    websocket: WebSocket

    def __call__(self, environ: Any, start_response: Callable[..., Any]) -> Iterable[bytes]:
        ws = self.websocket
        # Returned to the server: the takeover is under way, with the headers the view
        # or the framework added after the upgrade (Flask's session cookie, a request id).
        handover.claim(ws, self.headers.to_wsgi_list())
        return take_over(environ, start_response, ws)


@functools.lru_cache(maxsize=16)
def _upgrade_response_for(base: type[Response]) -> type[UpgradeResponse]:
    if issubclass(base, UpgradeResponse):
        return base
    return type(f"Upgrade{base.__name__}", (UpgradeResponse, base), {"default_mimetype": None})


def _response_class() -> type[UpgradeResponse]:
    # Flask converts any response that is not an instance of app.response_class
    # by swapping its class, which would lose our __call__.
    flask = sys.modules.get("flask")
    if flask is not None and flask.has_app_context():
        return _upgrade_response_for(flask.current_app.response_class)
    return UpgradeResponse


def _check_returned(ws: WebSocket) -> None:
    # The response was dropped without being called: the view returned another one.
    handover.abandon(ws)


_HANDSHAKE_KEYS = (
    ("Upgrade", "HTTP_UPGRADE"),
    ("Connection", "HTTP_CONNECTION"),
    ("Sec-WebSocket-Key", "HTTP_SEC_WEBSOCKET_KEY"),
    ("Sec-WebSocket-Version", "HTTP_SEC_WEBSOCKET_VERSION"),
    ("Sec-WebSocket-Protocol", "HTTP_SEC_WEBSOCKET_PROTOCOL"),
    ("Sec-WebSocket-Extensions", "HTTP_SEC_WEBSOCKET_EXTENSIONS"),
)


def environ_headers(environ: Environ) -> Iterator[tuple[str, str]]:
    """The handshake's request headers in a WSGI environ (PEP 3333 ``HTTP_*`` keys).

    Servers join repeated headers with commas, as RFC 9110 §5.3 allows.
    """
    for name, key in _HANDSHAKE_KEYS:
        value = environ.get(key)
        if value is not None:
            yield name, value


_COLLECTED_KEYS = tuple((name.lower(), key) for name, key in _HANDSHAKE_KEYS)


def _environ_collected(environ: Environ) -> dict[str, list[str]]:
    """The handshake's headers as validate_collected takes them, straight from the environ keys."""
    collected = {}
    for name, key in _COLLECTED_KEYS:
        value = environ.get(key)
        if value is not None:
            collected[name] = [value]
    return collected


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


def _log_refusal(environ: Environ, error: HandshakeError) -> None:
    """One access-log line per refused upgrade: a browser shows its page only 1006."""
    STATS.rejected(error.status)
    if access_logger.isEnabledFor(logging.INFO):
        peer = (environ.get("REMOTE_ADDR") or "-", environ.get("REMOTE_PORT") or "-")
        path = environ.get("PATH_INFO") or "/"
        fields = {
            "event": "rejected", "path": path, "peer": f"{peer[0]}:{peer[1]}", "status": error.status,
            "reason": str(error),
        }
        access_logger.info(
            "WebSocket refused %s peer=%s:%s status=%d: %s", path, *peer, error.status, error,
            extra={"takeover": fields},
        )


def _socket_destroyed(sock: Any) -> bool:
    try:
        return bool(sock.fileno() < 0)
    except (OSError, ValueError):
        return True


def upgrade_websocket(
    request: Request | Environ,
    *,
    protocol: str | None = None,
    socket: Any = None,
    head: bytes = b"",
    idle_timeout: float | None = UNSET,
    max_message_size: int | None = UNSET,
    close_timeout: float = UNSET,
    max_queue: int = UNSET,
    compression: Compression = UNSET,
    allowed_origins: AllowedOrigins = UNSET,
    high_water_mark: int | None = UNSET,
    send_timeout: float | None = UNSET,
    max_buffered_amount: int | None = UNSET,
    listener_threads: int = UNSET,
    handler_threads: int = UNSET,
    handler: Callable[[WebSocket], object] | None = None,
    options: WebSocketOptions | None = None,
) -> WebSocketUpgrade:
    """Upgrade ``request`` (a werkzeug ``Request`` or a WSGI environ) to a WebSocket.

    Returns ``(socket, response)`` at once. ``protocol`` must be one the
    client offered. ``socket``/``head`` perform the upgrade over a socket from
    a server's ``upgrade`` event; without them, return ``response`` from the
    WSGI view.

    The other options are those of :class:`~takeover.options.WebSocketOptions`;
    each one not given keeps the server's setting (``create_server(...)``,
    ``takeover serve`` flags), else its default. ``options`` replaces the
    server's settings as a whole; the keyword arguments still apply on top.

    * ``idle_timeout`` (seconds; 0 or None disables, default 30) pings after
      half of it passes in silence and closes with 1001 after all of it.
    * Messages over ``max_message_size`` bytes (default 64 MiB) close the
      connection with 1009.
    * ``compression`` is ``"deflate"`` (or :class:`~takeover.DeflateOptions`)
      to accept a client's permessage-deflate offer, None for none (the default).
    * Backpressure, for peers that stop reading: ``send()`` waits while more
      than ``high_water_mark`` bytes (1 MiB) are queued, raising
      :class:`TimeoutError` after ``send_timeout`` seconds (30); more than
      ``max_buffered_amount`` bytes (16 MiB) queued (by sends that do not
      wait, such as :func:`takeover.broadcast`) closes the connection with
      1008. None disables each.
    * ``allowed_origins`` defends cookie-authenticated apps against cross-site
      WebSocket hijacking: a list of the origins whose pages may connect, as
      ``["https://app.example.com", "http://localhost:8000"]`` (compared as
      :func:`~takeover.protocol.origin.normalize_origin` serialises them:
      scheme and host lower-cased, ``:80``/``:443`` dropped), or a function
      ``(origin: str | None) -> bool``. A request from another ``Origin`` gets
      403. A request without ``Origin`` is not from a browser (browsers always
      send it, RFC 6455 §4.1) and is allowed by a list; a function receives
      None and decides. ``"null"`` matches only if listed. None checks nothing.
    * ``listener_threads`` (16): on threaded servers (gunicorn sync/gthread,
      uWSGI, Werkzeug) an event-style WebSocket is handed over to takeover's
      I/O thread and its listeners run in a pool of this many threads, one
      WebSocket's in order (see docs/guides/servers.rst). The process has one
      pool, sized by the first WebSocket handed over.
    * ``handler``: a blocking function ``handler(ws)`` (a loop of
      ``ws.receive()`` and ``ws.send()``) to run once the WebSocket is open:
      in a greenlet under gevent, in a thread of its own on threaded servers,
      so the server's request thread returns at once either way. When it
      returns the WebSocket is closed with 1000; when it raises, the
      exception is logged and the WebSocket closed with 1011.
      ``handler_threads`` (1000) caps how many such threads run at once in the
      process (the first WebSocket with a handler sets it); an upgrade beyond
      it is answered 503 Service Unavailable.

    Raises :class:`HandshakeError` (with ``.status`` and ``.headers`` to
    answer) before anything is written, and :class:`InvalidStateError` for a
    socket that is closed or already upgraded. A malformed option (a single
    string as ``allowed_origins``, a negative size, an unknown compression)
    raises :class:`TypeError` or :class:`ValueError` whatever the request.
    """
    if isinstance(request, Request):
        environ: Environ = request.environ
        werkzeug_request: Request | None = request
    else:
        environ, werkzeug_request = request, None
    base = options if options is not None else environ.get(OPTIONS_KEY, DEFAULT_OPTIONS)
    # One copy with what this call changes; a call that changes nothing shares the server's.
    settings = base.replace(
        idle_timeout=idle_timeout,
        max_message_size=max_message_size,
        close_timeout=close_timeout,
        max_queue=max_queue,
        compression=compression,
        allowed_origins=allowed_origins,
        high_water_mark=high_water_mark,
        send_timeout=send_timeout,
        max_buffered_amount=max_buffered_amount,
        listener_threads=listener_threads,
        handler_threads=handler_threads,
    )
    try:
        handshake = validate_collected(
            environ.get("REQUEST_METHOD", ""),
            environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
            _environ_collected(environ),
        )
        policy = settings.allowed_origins
        if policy is not None:
            # RFC 6455 §4.2.1 item 7 and §10.2: check Origin, answer 403 when refused.
            policy.check(environ.get("HTTP_ORIGIN"))
        chosen = select_protocol(handshake, protocol)
        offered = settings.compression
        deflate = negotiate(handshake.extensions, offered) if offered is not None else None
        if _body_disturbed(werkzeug_request, environ):
            raise HandshakeError(
                "Request body was already read (disturbed): upgrade before reading the body",
                status=400,
            )
    except HandshakeError as error:
        _log_refusal(environ, error)
        raise HTTPHandshakeError(error) from None
    registry: Registry | None = environ.get(REGISTRY_KEY)
    if registry is None:
        registry = DEFAULT_REGISTRY
    if socket is not None:
        if _socket_destroyed(socket):
            raise InvalidStateError("Socket is already destroyed - cannot upgrade to WebSocket")
        if registry.websocket_for(socket) is not None:
            raise InvalidStateError("Socket has already been upgraded to a WebSocket")
    elif environ.get(ENVIRON_KEY) is not None:
        raise InvalidStateError("This request has already been upgraded to a WebSocket")

    headers = accept_headers(handshake, chosen, deflate.response if deflate is not None else None)
    ws = WebSocket(
        handshake_response=accept_response(headers),
        url=_request_url(environ),
        protocol=chosen or "",
        deflate=deflate,
        options=settings,
        registry=registry,
        socket=socket,
    )
    context = None
    if "flask" in sys.modules:  # listeners attached in a view run in its contexts (takeover._flask)
        from takeover._flask import capture

        context = capture()
    try:
        handover.prepare(ws, headers, context, handler)
    except HandshakeError as error:  # handler_threads reached: 503
        _log_refusal(environ, error)
        raise HTTPHandshakeError(error) from None
    if socket is not None:
        response = _switching_protocols(list(headers))
        handover.attach(ws, socket, head)
    else:
        response = cast(UpgradeResponse, _switching_protocols(list(headers), _response_class()))
        response.websocket = ws
        weakref.finalize(response, _check_returned, ws)
        environ[ENVIRON_KEY] = ws
    return WebSocketUpgrade(ws, response)


def pending_upgrade(environ: Environ) -> WebSocket | None:
    """The WebSocket a view prepared in response mode, if any (for server adapters)."""
    ws = environ.get(ENVIRON_KEY)
    return ws if isinstance(ws, WebSocket) and not handover.is_claimed(ws) else None


def complete_upgrade(environ: Environ, sock: Any, head: bytes = b"") -> WebSocket:
    """Hand ``sock`` and its buffered ``head`` bytes to the view's pending WebSocket.

    Server adapters call this after the application returned the 101
    response; the WebSocket writes the 101 itself, and the server must write
    nothing more on ``sock`` nor close it.
    """
    ws = pending_upgrade(environ)
    if ws is None:
        raise InvalidStateError("No pending WebSocket upgrade in this request")
    handover.attach(ws, sock, head)
    return ws
