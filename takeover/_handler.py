"""The per-connection handler of :class:`takeover.Server`: gevent's, plus takeovers and limits.

It reads requests as gevent's ``WSGIHandler`` does, with three changes:

* upgrade and CONNECT requests are offered to the server's events, and
  in-app upgrades find the connection through :data:`TAKE_OVER_KEY`; a
  taken-over socket is left alone from then on;
* headers are limited in size (431) and in the time they take to arrive (408);
* client errors go to the ``clientError`` event, or get Node's default answers.
"""

from __future__ import annotations

import logging
import re
import socket as _socket
from typing import TYPE_CHECKING, Any

import gevent
from gevent.pywsgi import Input, OldMessage, WSGIHandler, _InvalidClientRequest, unquote_latin1
from werkzeug.wrappers import Request

from takeover._io import handover
from takeover._io.registry import REGISTRY_KEY
from takeover.adapters import TAKE_OVER_KEY, abort_handshake, read_buffered
from takeover.errors import ClientError, HandshakeError
from takeover.options import OPTIONS_KEY
from takeover.protocol.handshake import is_upgrade_request, reject_response
from takeover.upgrade import pending_upgrade

if TYPE_CHECKING:
    from takeover.server import Server, _GeventServer

__all__ = ["ClientError", "TakeoverHandler"]

logger = logging.getLogger("takeover")

MAX_HEADER_COUNT = 100
# A field name is a token (RFC 9110 §5.1, §5.6.2) followed at once by a colon.
_HEADER_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):(.*)", re.DOTALL)


class _HeaderTimeout(BaseException):  # not caught by gevent's "except Exception"
    pass


class _HeaderTimer:
    """What gevent.Timeout does for the header timeout, on a bare loop timer.

    Throws ``exception`` into the greenlet that made it after ``seconds``;
    gevent.Timeout's own bookkeeping cost about 1.5% of a handshake.
    """

    __slots__ = ("_timer", "exception")

    def __init__(self, seconds: float) -> None:
        self.exception = _HeaderTimeout()
        self._timer = gevent.get_hub().loop.timer(seconds)
        self._timer.start(gevent.getcurrent().throw, self.exception)

    def cancel(self) -> None:
        self._timer.stop()

    def close(self) -> None:
        self._timer.stop()
        self._timer.close()


class _Headers(OldMessage):  # type: ignore[misc]
    """gevent's message class over the parsed fields, with lookups by a dict of lower-cased names.

    email's ``Message.get`` walks every header lower-casing each name, and gevent
    asks it five times per request; the index holds each name's first value, as
    ``get`` returns it.
    """

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        super().__init__()
        self._headers = fields
        index: dict[str, str] = {}
        for name, value in fields:
            index.setdefault(name.lower(), value)
        self._index = index

    def get(self, name: str, failobj: Any = None) -> Any:
        return self._index.get(name.lower(), failobj)

    getheader = get

    def __getitem__(self, name: str) -> Any:
        return self._index.get(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __delitem__(self, name: str) -> None:
        super().__delitem__(name)
        self._index.pop(name.lower(), None)

    @property
    def typeheader(self) -> str | None:
        return self._index.get("content-type")


_FAST_VERSIONS = frozenset({"HTTP/1.1", "HTTP/1.0"})
# Header name -> environ key (None: left out, as gevent leaves out names with "_"
# and Content-Type/Length, which have keys of their own). Bounded: names are the client's.
_ENVIRON_KEYS: dict[str, str | None] = {}
_ENVIRON_KEYS_MAX = 512


def _environ_key(name: str) -> str | None:
    key = _ENVIRON_KEYS.get(name, "")
    if key != "":
        return key
    if "_" in name:
        key = None
    else:
        key = name.replace("-", "_").upper()
        key = None if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key
    if len(_ENVIRON_KEYS) < _ENVIRON_KEYS_MAX:
        _ENVIRON_KEYS[name] = key
    return key


class TakeoverHandler(WSGIHandler):  # type: ignore[misc]
    server: _GeventServer
    socket: Any
    rfile: Any
    environ: dict[str, Any]
    close_connection: bool
    requestline: str | None
    _request_begun = False  # a byte of the current request has arrived
    greenlet: Any = None  # the greenlet handling this connection
    command: str
    path: str

    # -- reading requests, with limits ------------------------------------

    def handle(self) -> None:
        self.greenlet = gevent.getcurrent()  # close() may run in it: it must not wait for itself
        try:
            super().handle()
        except OSError as error:
            # gevent writes its error answers (400, 408, 414, 431) unguarded: a client
            # that is already gone (EPIPE, ECONNRESET) must not end in a hub traceback.
            if error.errno not in self.ignored_socket_errors:
                raise

    def close_if_idle(self) -> bool:
        """Shut down a keep-alive connection waiting for its next request; False if one is in progress.

        Node's ``server.close()`` closes idle connections the same way (since 19).
        """
        if self._request_begun or self.socket is None:
            return False
        self.abort()
        return True

    def abort(self) -> None:
        """End the connection now: its handler sees end of stream and returns."""
        if self.socket is not None:
            try:
                self.socket.shutdown(_socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_one_request(self) -> Any:
        if self.server.owner.closing:
            return None  # no new request on a kept-alive connection once close() began
        timeout = self.server.owner.header_timeout
        self.requestline = None
        self._request_begun = False
        timer = None
        if timeout:
            timer = self._header_timer = _HeaderTimer(timeout)
        try:
            result = super().handle_one_request()
        except _HeaderTimeout as error:
            if timer is None or error is not timer.exception:
                raise
            if not self._request_begun:
                return None  # an idle keep-alive connection: close it quietly
            return self._handle_client_error(
                ClientError(408, "ERR_HTTP_REQUEST_TIMEOUT", "Request headers took too long to arrive")
            )
        finally:
            if timer is not None:
                timer.close()
        if type(result) is tuple and result[0] == "414":
            # gevent answers an over-long request line itself, with 414 as RFC 9112 §3
            # asks; like Node's over-long heads, it goes to 'clientError' listeners.
            return self._handle_client_error(
                ClientError(414, "HPE_HEADER_OVERFLOW", "Request line too long")
            )
        return result

    def read_requestline(self) -> str:
        # Wait for the request's first byte before reading its line: a header timeout
        # can then tell a request that has begun (408; a partial line read so far is
        # lost inside readline) from an idle keep-alive connection (closed quietly).
        if self.rfile.peek(1):
            self._request_begun = True
        line: str = super().read_requestline()
        return line

    def _buffered(self) -> bytes:
        """Bytes already read from the socket and not yet parsed, without waiting for more."""
        if self.socket is None:
            return b""
        return read_buffered(self.socket, self.rfile)

    def MessageClass(self, fp: Any, *args: Any) -> Any:
        """Read and parse the header block within ``max_header_size`` (431 beyond).

        The lines are split here (RFC 9112 §5: ``name ":" value``; obsolete line
        folding is refused) straight into gevent's message class, instead of
        through the email package, which costs more than the rest of a handshake.
        """
        limit = self.server.owner.max_header_size
        size = 0
        fields: list[tuple[str, str]] = []
        for _ in range(MAX_HEADER_COUNT + 1):
            line = fp.readline(limit + 1)
            size += len(line)
            if size > limit:
                break
            if line in (b"\r\n", b"\n"):
                return _Headers(fields)
            if not line.endswith(b"\n"):
                # The connection ended before the blank line: an incomplete request
                # is not acted on (RFC 9112 §8); Node reports HPE_INVALID_EOF_STATE.
                raise ClientError(
                    400, "HPE_INVALID_EOF_STATE", "Request ended before its headers were complete"
                )
            match = _HEADER_LINE.match(line)
            if match is None:
                raise ClientError(400, "HPE_INVALID_HEADER_TOKEN", "Invalid header line")
            name, value = match.groups()
            fields.append((name.decode("latin-1"), value.strip(b" \t\r\n").decode("latin-1")))
        raise ClientError(431, "HPE_HEADER_OVERFLOW", "Request header fields too large")

    def read_request(self, raw_requestline: str) -> bool:
        """gevent's, straight from the parsed fields for HTTP/1.0 and 1.1 (else gevent's own)."""
        requestline = raw_requestline.rstrip()
        words = requestline.split()
        if len(words) != 3 or words[2] not in _FAST_VERSIONS:
            return bool(super().read_request(raw_requestline))
        self.requestline = requestline
        self.command, self.path, version = words
        self.request_version = version
        headers = self.headers = self.MessageClass(self.rfile, 0)
        index = headers._index
        if index.get("transfer-encoding", "").lower() == "chunked" and "content-length" in index:
            del headers["content-length"]
        content_length = index.get("content-length")
        if content_length is not None:
            content_length = int(content_length)
            if content_length < 0:
                raise _InvalidClientRequest(f"Invalid Content-Length: {content_length!r}")
            if content_length and self.command == "HEAD":
                raise _InvalidClientRequest("Unexpected Content-Length")
        self.content_length = content_length
        if version == "HTTP/1.1":
            self.close_connection = index.get("connection", "").lower() == "close"
        else:
            self.close_connection = index.get("connection", "close").lower() != "keep-alive"
        return True

    def _gevent_environ(self) -> dict[str, Any]:
        """What gevent's ``get_environ`` makes, from the parsed fields in one pass."""
        headers = self.headers
        if not isinstance(headers, _Headers):
            environ: dict[str, Any] = super().get_environ()
            return environ
        env: dict[str, Any] = self.server.get_environ()
        env["REQUEST_METHOD"] = self.command
        env["SCRIPT_NAME"] = ""
        path = self.path
        query = ""
        if "?" in path:
            path, query = path.split("?", 1)
        env["PATH_INFO"] = unquote_latin1(path) if "%" in path else path
        env["QUERY_STRING"] = query
        index = headers._index
        content_type = index.get("content-type")
        if content_type is not None:
            env["CONTENT_TYPE"] = content_type
        length = index.get("content-length")
        if length:
            env["CONTENT_LENGTH"] = length
        env["SERVER_PROTOCOL"] = self.request_version
        client_address = self.client_address
        if isinstance(client_address, tuple):
            env["REMOTE_ADDR"] = str(client_address[0])
            env["REMOTE_PORT"] = str(client_address[1])
        for name, value in headers._headers:
            key = _environ_key(name)
            if key is None:
                continue
            value = value.strip()
            if key in env:
                env[key] += ("; " if "COOKIE" in key else ",") + value
            else:
                env[key] = value
        sock = self.socket if env.get("HTTP_EXPECT") == "100-continue" else None
        chunked = env.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
        self.wsgi_input = Input(self.rfile, self.content_length, socket=sock, chunked_input=chunked)
        return env

    def get_environ(self) -> dict[str, Any]:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()  # the headers are in: the application may take its time
        environ = self._gevent_environ()
        environ["RAW_URI"] = environ["REQUEST_URI"] = self.path  # CONNECT's host:port, Node's req.url
        # gevent hands upgrade requests its raw reader and input_terminated=False,
        # which werkzeug reads to EOF (a hang); the body of such a request is
        # what Content-Length or chunking says, and gevent's Input knows that.
        environ["wsgi.input"] = self.wsgi_input
        environ["wsgi.input_terminated"] = True
        environ[TAKE_OVER_KEY] = self._take
        owner = self.server.owner
        environ[OPTIONS_KEY] = owner.options  # the upgrades' defaults
        environ[REGISTRY_KEY] = owner.registry  # counted, and closed with the server
        return environ

    def _handle_client_error(self, error: BaseException) -> Any:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.close()  # answering is not receiving: a slow clientError listener gets no 408
        if not isinstance(error, ClientError):
            error = ClientError(400, "HPE_INVALID", str(error) or "Bad Request")
        owner = self.server.owner
        if owner.listener_count("clientError"):
            owner._emit_safely("clientError", error, self.socket)
            return None  # the listener answered; the connection closes after it
        status = error.status
        return (str(status), reject_response(status, str(error)))

    # -- taking connections over ------------------------------------------

    def _take(self) -> tuple[Any, bytes]:
        """Detach the socket from this handler, with the bytes it had buffered."""
        sock = self.socket
        head = self._buffered()
        self.rfile.close()  # drops its reference; the socket stays open
        self.environ.pop(TAKE_OVER_KEY, None)  # used up (and a cycle through this handler)
        self.server.taken.add(sock)
        self.socket = None  # handle() neither reads nor closes it now
        self.close_connection = True
        return sock, head

    def handle_one_response(self) -> None:
        owner = self.server.owner
        environ = self.environ
        if environ["REQUEST_METHOD"] == "CONNECT":
            if owner.listener_count("connect"):
                self._emit_takeover(owner, "connect")
            else:
                self.close_connection = True  # Node: no 'connect' listener closes the connection
            return
        # RFC 9110 §7.8: an Upgrade header listed in Connection.
        upgrade = is_upgrade_request(environ.get("HTTP_UPGRADE"), environ.get("HTTP_CONNECTION"))
        if upgrade and owner.wants_upgrade(environ):
            self._emit_takeover(owner, "upgrade")
            return
        try:
            super().handle_one_response()
            self._after_app(environ)
        finally:
            environ.pop(TAKE_OVER_KEY, None)  # a bound method of this handler: a cycle

    def _emit_takeover(self, owner: Server, event: str) -> None:
        request = Request(self.environ, populate_request=False)  # no environ<->request cycle
        sock, head = self._take()
        try:
            owner.emit(event, request, sock, head)
        except HandshakeError as error:
            abort_handshake(sock, error)
        except Exception:
            logger.exception("Exception in a listener of %r for %s", event, request.path)
            if owner.registry.websocket_for(sock) is None:
                sock.close()

    def _after_app(self, environ: dict[str, Any]) -> None:
        ws = pending_upgrade(environ)
        if ws is not None:
            # Deno: a handler that called upgradeWebSocket must return its
            # response; otherwise the upgrade is abandoned and the connection closed.
            handover.abandon(ws)
            self.close_connection = True
