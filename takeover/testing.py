"""``takeover.testing``: test a WebSocket route of a WSGI app in process, like any other route.

::

    from takeover.testing import connect, HandshakeRejected

    with connect(app, "/ws?room=1") as ws:
        ws.send("hello")
        assert ws.receive() == "hello"

The app runs over a real socket pair, with real RFC 6455 frames (this client
masks, as clients must), through the same take-over path takeover's server
uses; no port, no server to start. Under gevent (a monkey-patched ``socket``)
the pair is gevent's and the session a greenlet; otherwise plain sockets and
threads. Every wait has a timeout. An exception raised by a server-side
listener during the test is raised again at the next :meth:`TestWebSocket.receive`
or when the ``with`` block ends (``raise_server_exceptions=False`` turns that off).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from werkzeug.test import EnvironBuilder

from takeover.adapters import TAKE_OVER_KEY
from takeover.errors import ConnectionClosed

__all__ = ["HandshakeRejected", "TestWebSocket", "connect"]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class HandshakeRejected(Exception):
    """The app answered the upgrade with something else than 101: ``status``, ``headers``, ``body``."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        super().__init__(f"The upgrade was answered {status}: {body[:200]!r}")
        self.status = status
        self.headers = headers
        self.body = body


class _ListenerErrors(logging.Handler):
    """Collects the exceptions takeover logs for server-side listeners (and sessions)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


class TestWebSocket:
    """The client end of :func:`connect`: ``send``, ``receive``, ``close``, and what the server said."""

    __test__ = False  # not a pytest test class

    def __init__(self, sock: socket.socket, timeout: float, errors: _ListenerErrors | None) -> None:
        self._sock = sock
        self._buffer = b""
        self._errors = errors
        self.timeout = timeout
        #: The headers of the 101 response (lower-case names), and its subprotocol.
        self.response_headers: dict[str, str] = {}
        self.protocol = ""
        #: The close code and reason, once the server has closed (or answered our close).
        self.close_code: int | None = None
        self.close_reason = ""

    # -- frames ------------------------------------------------------------

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"Nothing from the server within {self.timeout} seconds")
        self._sock.settimeout(remaining)
        try:
            chunk = self._sock.recv(65536)
        except TimeoutError:
            raise TimeoutError(f"Nothing from the server within {self.timeout} seconds") from None
        except OSError:
            chunk = b""
        if not chunk:
            raise ConnectionClosed(self.close_code or 1006, self.close_reason, False)
        self._buffer += chunk

    def _read(self, size: int, deadline: float) -> bytes:
        for _ in range(1_000_000):
            if len(self._buffer) >= size:
                break
            self._fill(deadline)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _frame(self, deadline: float) -> tuple[int, bool, bytes]:
        first, second = self._read(2, deadline)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read(2, deadline))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read(8, deadline))[0]
        return first & 0x0F, bool(first & 0x80), self._read(length, deadline)

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = bytes(byte ^ mask[index & 3] for index, byte in enumerate(payload))
        self._sock.sendall(header + mask + masked)

    def _raise_server_errors(self) -> None:
        if self._errors is not None and self._errors.errors:
            error = self._errors.errors.pop(0)
            raise error

    # -- the API -----------------------------------------------------------

    def send(self, data: str | bytes) -> None:
        """Send a text (``str``) or binary (bytes-like) message."""
        if isinstance(data, str):
            self._send_frame(_TEXT, data.encode("utf-8"))
        else:
            self._send_frame(_BINARY, bytes(data))

    def receive(self, timeout: float | None = None) -> str | bytes:
        """The next message; :class:`TimeoutError` after ``timeout`` (default: connect()'s).

        Raises :class:`~takeover.ConnectionClosed` once the server has closed.
        """
        self._raise_server_errors()
        if self.close_code is not None:
            raise ConnectionClosed(self.close_code, self.close_reason, True)
        try:
            return self._receive(self.timeout if timeout is None else timeout)
        except (TimeoutError, ConnectionClosed):
            self._raise_server_errors()  # what the server's listener raised meanwhile, first
            raise

    def _receive(self, timeout: float) -> str | bytes:
        deadline = time.monotonic() + timeout
        parts: list[bytes] = []
        message_opcode = 0
        for _ in range(100_000):  # bounded: control frames are answered on the way
            opcode, fin, payload = self._frame(deadline)
            if opcode == _PING:
                self._send_frame(_PONG, payload)
                continue
            if opcode == _PONG:
                continue
            if opcode == _CLOSE:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.close_reason = payload[2:].decode("utf-8", "replace")
                with contextlib.suppress(OSError):
                    self._send_frame(_CLOSE, payload[:2])
                raise ConnectionClosed(self.close_code, self.close_reason, True)
            if opcode in (_TEXT, _BINARY):
                message_opcode = opcode
            parts.append(payload)
            if fin:
                data = b"".join(parts)
                return data.decode("utf-8") if message_opcode == _TEXT else data
        raise RuntimeError("receive() read 100,000 frames without a whole message")

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close (RFC 6455 §7.1.2) and wait, up to the timeout, for the server's answer."""
        if self.close_code is not None:
            return
        with contextlib.suppress(OSError):
            self._send_frame(_CLOSE, code.to_bytes(2, "big") + reason.encode("utf-8"))
        deadline = time.monotonic() + self.timeout
        with contextlib.suppress(ConnectionClosed, TimeoutError, OSError):
            for _ in range(100_000):
                opcode, _, payload = self._frame(deadline)
                if opcode == _CLOSE:
                    self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                    self.close_reason = payload[2:].decode("utf-8", "replace")
                    break
        self._sock.close()


def _socketpair() -> tuple[socket.socket, socket.socket]:
    """gevent's pair where the socket module is patched (the session is then a greenlet)."""
    try:
        from gevent import monkey

        if monkey.is_module_patched("socket"):
            import gevent.socket

            pair: tuple[socket.socket, socket.socket] = gevent.socket.socketpair()
            return pair
    except ImportError:
        pass
    return socket.socketpair()


def _read_response(client: TestWebSocket, deadline: float) -> tuple[int, list[tuple[str, str]]]:
    """The status and headers of the server's answer on the socket (the 101)."""
    for _ in range(10_000):
        if b"\r\n\r\n" in client._buffer:
            break
        client._fill(deadline)
    head, _, client._buffer = client._buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return status, headers


@contextlib.contextmanager
def connect(
    app: WSGIApp,
    path: str = "/",
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    subprotocols: Sequence[str] | None = None,
    client: Any = None,
    timeout: float = 5.0,
    *,
    raise_server_exceptions: bool = True,
) -> Iterator[TestWebSocket]:
    """Open a WebSocket to ``app`` at ``path`` (with its query string) in process.

    ``headers`` are added to the handshake request; ``subprotocols`` are
    offered in ``Sec-WebSocket-Protocol``; ``client`` is a Flask or Werkzeug
    test client whose cookies are sent, and which stores the cookies the 101
    sets. A refusal raises :class:`HandshakeRejected`. The ``with`` block
    closes the WebSocket (1000) at its end.
    """
    key = base64.b64encode(os.urandom(16)).decode()
    request_headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]
    if subprotocols:
        request_headers.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
    extra = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
    builder = EnvironBuilder(path=path, headers=request_headers + extra)
    environ: dict[str, Any] = builder.get_environ()
    if client is not None:
        client._add_cookies_to_wsgi(environ)
    server_side, client_side = _socketpair()
    environ[TAKE_OVER_KEY] = lambda: (server_side, b"")
    answered: list[Any] = []

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        answered[:] = [status, response_headers]
        return lambda data: None

    errors = _ListenerErrors() if raise_server_exceptions else None
    takeover_logger = logging.getLogger("takeover")
    if errors is not None:
        takeover_logger.addHandler(errors)
    peer = TestWebSocket(client_side, timeout, errors)
    try:
        result = app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if answered and not answered[0].startswith("101"):
            server_side.close()
            client_side.close()
            raise HandshakeRejected(int(answered[0].split()[0]), list(answered[1]), body)
        deadline = time.monotonic() + timeout
        status, response_headers = _read_response(peer, deadline)
        if status != 101:
            raise HandshakeRejected(status, response_headers, b"")
        peer.response_headers = {name.lower(): value for name, value in response_headers}
        peer.protocol = peer.response_headers.get("sec-websocket-protocol", "")
        if client is not None:
            cookies = [value for name, value in response_headers if name.lower() == "set-cookie"]
            if cookies:
                client._update_cookies_from_response(builder.server_name, path.split("?")[0], cookies)
        yield peer
        peer.close()
        peer._raise_server_errors()
    finally:
        if errors is not None:
            takeover_logger.removeHandler(errors)
        with contextlib.suppress(OSError):
            client_side.close()
