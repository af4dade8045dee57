"""Shared fixtures: real servers started as processes on 127.0.0.1, raw socket clients."""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
LISTENING = re.compile(rb"ws://[^:]+:(\d+)/")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--autobahn-all",
        action="store_true",
        default=False,
        help="run Autobahn sections 1-10 (adds the section 9 performance cases), all of 12 and 13 "
        "(permessage-deflate), and 1-10 again with compression on",
    )


@dataclass
class ServerProcess:
    """A server started as its own process; ``port`` is the one it printed."""

    process: subprocess.Popen[bytes]
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def start_server(script: str | Path, *args: str, timeout: float = 20) -> ServerProcess:
    """Start ``script --host 127.0.0.1 --port 0 *args`` and wait for its listening line."""
    command = [sys.executable, str(script), "--host", "127.0.0.1", "--port", "0", *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, env=env
    )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = LISTENING.search(line)
        if match:
            return ServerProcess(process, "127.0.0.1", int(match.group(1)))
    process.kill()
    raise RuntimeError(f"{script} did not start: {b''.join(lines).decode(errors='replace')}")


@pytest.fixture(scope="module")
def echo_server() -> Iterator[ServerProcess]:
    """``examples/echo.py`` with a short idle timeout disabled (0) for plain echo tests."""
    server = start_server(EXAMPLES / "echo.py", "--idle-timeout", "0")
    yield server
    server.stop()


# -- raw clients --------------------------------------------------------------

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


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = b"\x01\x02\x03\x04", rsv: int = 0
) -> bytes:
    """A client frame, masked with ``mask`` (None sends it unmasked)."""
    first = (0x80 if fin else 0) | rsv | opcode
    length = len(payload)
    mask_bit = 0x80 if mask is not None else 0
    if length < 126:
        header = bytes((first, mask_bit | length))
    elif length < 65536:
        header = bytes((first, mask_bit | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((first, mask_bit | 127)) + length.to_bytes(8, "big")
    if mask is None:
        return header + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


class RawClient:
    """A blocking TCP client that reads HTTP responses and server frames."""

    def __init__(
        self, port: int, host: str = "127.0.0.1", timeout: float = 10, *, connect: Any = None
    ) -> None:
        """``connect`` replaces ``socket.create_connection`` (gevent's, in-process)."""
        self.sock = (connect or socket.create_connection)((host, port), timeout=timeout)
        self.buffer = b""

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


# -- in-process servers (gevent) ----------------------------------------------


@pytest.fixture
def server() -> Iterator[Any]:
    """takeover's server in this process, on an ephemeral port."""
    from takeover import create_server

    srv = create_server()
    srv.listen(0)
    yield srv
    srv.close()


@pytest.fixture
def make_server() -> Iterator[Any]:
    """``make(app=None, **options)``: servers in this process, all closed afterwards."""
    from takeover import create_server

    servers: list[Any] = []

    def make(app: Any = None, **options: Any) -> Any:
        server = create_server(app, **options)
        server.listen(0)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close(timeout=1)


@pytest.fixture
def raw_client(echo_server: ServerProcess) -> Iterator[RawClient]:
    client = RawClient(echo_server.port)
    yield client
    client.close()
