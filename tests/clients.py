"""Raw socket clients: handshake requests, server frames read off a socket, echo checks."""

from __future__ import annotations

import base64
import socket
from typing import Any

from tests.frames import client_frame

KEY = base64.b64encode(b"0123456789abcdef").decode()


def handshake_request(
    path: str = "/",
    *,
    method: str = "GET",
    version: str = "HTTP/1.1",
    headers: dict[str, str] | None = None,
    omit: tuple[str, ...] = (),
) -> bytes:
    """An upgrade request; ``headers`` override the defaults, ``omit`` drops some."""
    fields = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    fields.update(headers or {})
    lines = [f"{method} {path} {version}"]
    lines += [f"{name}: {value}" for name, value in fields.items() if name not in omit]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawClient:
    """A blocking TCP client that reads HTTP responses and server frames."""

    def __init__(
        self, port: int, host: str = "127.0.0.1", timeout: float = 10, *, connect: Any = None
    ) -> None:
        """``connect`` replaces ``socket.create_connection`` (gevent's, in-process)."""
        self.sock = (connect or socket.create_connection)((host, port), timeout=timeout)
        self.buffer = b""
        #: The status line of the last response read, e.g. ``HTTP/1.1 501 Not Implemented``.
        self.status_line = ""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def read_response(self) -> tuple[int, dict[str, str], bytes]:
        """Status, headers (lower-case names) and, if Content-Length says so, the body."""
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"closed before a full response: {self.buffer!r}")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", 0))
        while len(self.buffer) < length:
            if not self._fill():
                break
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def read_frame(self) -> tuple[int, bool, bytes]:
        """One server frame: (opcode, fin, payload). Server frames are never masked."""
        while len(self.buffer) < 2:
            if not self._fill():
                raise ConnectionError("closed before a frame")
        first, second = self.buffer[0], self.buffer[1]
        assert not second & 0x80, "server frames must not be masked"
        length, offset = second & 0x7F, 2
        if length == 126:
            while len(self.buffer) < 4:
                self._fill()
            length, offset = int.from_bytes(self.buffer[2:4], "big"), 4
        elif length == 127:
            while len(self.buffer) < 10:
                self._fill()
            length, offset = int.from_bytes(self.buffer[2:10], "big"), 10
        while len(self.buffer) < offset + length:
            if not self._fill():
                raise ConnectionError("closed inside a frame")
        payload = self.buffer[offset : offset + length]
        self.buffer = self.buffer[offset + length :]
        return first & 0x0F, bool(first & 0x80), payload

    def read_close(self) -> tuple[int | None, str]:
        """Skip to the next close frame; return its code and reason."""
        for _ in range(1000):
            opcode, _, payload = self.read_frame()
            if opcode == 0x8:
                if not payload:
                    return None, ""
                return int.from_bytes(payload[:2], "big"), payload[2:].decode()
        raise AssertionError("no close frame")

    def at_eof(self, timeout: float = 5) -> bool:
        """Whether the server closes the connection within ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buffer += chunk
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def assert_echoes(port: int, connect: Any = None) -> None:
    """A new client on ``port`` is upgraded and echoed: the server still serves."""
    client = RawClient(port, connect=connect)
    try:
        client.send(handshake_request() + client_frame(0x1, b"still serving"))
        assert client.read_response()[0] == 101
        assert client.read_frame() == (0x1, True, b"still serving")
    finally:
        client.close()


def upgraded_client(port: int) -> RawClient:
    """A raw client on ``port`` that has completed the handshake."""
    client = RawClient(port)
    client.send(handshake_request())
    assert client.read_response()[0] == 101
    return client
