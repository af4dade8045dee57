"""The node:http-style examples, run as processes on 127.0.0.1 and driven by real clients.

* ``examples/upgrade_line_echo.py``: a custom ``Upgrade: line-echo`` protocol;
* ``examples/tunnel.py``: a CONNECT proxy, in front of TCP and HTTP targets
  served by threads of this test process;
* ``examples/node_migration.py``: the seed's Node snippet, with ``websockets``.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import queue
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from websockets.sync.client import connect

from tests.clients import RawClient
from tests.paths import EXAMPLES, ROOT

LISTENING = re.compile(rb"listening on \w+://(?:\[[^\]]*\]|[^:/\s]+):(\d+)/")
MAX_LINE = 64 * 1024


class Example:
    """``examples/SCRIPT --host 127.0.0.1 --port 0 *args``, its output read by a thread."""

    def __init__(self, script: str, *args: str, timeout: float = 20) -> None:
        command = [sys.executable, str(EXAMPLES / script), "--host", "127.0.0.1", "--port", "0", *args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, env=env
        )
        self.output: list[bytes] = []
        self._lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self.port = int(self.wait_for(LISTENING, timeout).group(1))
        except BaseException:
            self.process.kill()
            self.process.wait(10)
            raise

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            self._lines.put(line)
        self._lines.put(b"")  # EOF

    def wait_for(self, pattern: re.Pattern[bytes] | bytes, timeout: float = 10) -> re.Match[bytes]:
        """The next output line that matches ``pattern``, within ``timeout`` seconds."""
        if isinstance(pattern, bytes):
            pattern = re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if not line:
                self._lines.put(b"")
                break
            match = pattern.search(line)
            if match:
                return match
        raise AssertionError(f"no {pattern.pattern!r} in the output: {b''.join(self.output)!r}")

    def stop(self) -> None:
        """SIGTERM; the example must exit with 0 and without a traceback."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                raise AssertionError("the example did not exit on SIGTERM") from None
        output = b"".join(self.output)
        assert self.process.returncode == 0, output
        assert b"Traceback" not in output, output


def read_until(client: RawClient, marker: bytes) -> bytes:
    """Everything up to and including ``marker`` (the client's timeout bounds the wait)."""
    while marker not in client.buffer:
        if not client._fill():
            raise ConnectionError(f"closed before {marker!r}: {client.buffer!r}")
    data, _, client.buffer = client.buffer.partition(marker)
    return data + marker


def read_to_eof(client: RawClient) -> bytes:
    while client._fill():
        pass
    data, client.buffer = client.buffer, b""
    return data


def reset(client: RawClient) -> None:
    """Close with a TCP reset (SO_LINGER 0)."""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def status_line(client: RawClient) -> tuple[bytes, dict[str, str]]:
    """The status line of the next response, and its headers (lower-case names)."""
    head = read_until(client, b"\r\n\r\n")
    first, *fields = head[:-4].decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for field in fields:
        name, _, value = field.partition(":")
        name = name.strip().lower()
        headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
    return first.encode("latin-1"), headers


# -- upgrade_line_echo.py -------------------------------------------------------


def line_echo_request(protocol: str = "line-echo", version: str = "HTTP/1.1") -> bytes:
    return (
        f"GET /chat HTTP/{version[5:]}\r\nHost: 127.0.0.1\r\n"
        f"Upgrade: {protocol}\r\nConnection: keep-alive, Upgrade\r\n\r\n"
    ).encode()


@pytest.fixture(scope="module")
def line_echo() -> Iterator[Example]:
    server = Example("upgrade_line_echo.py")
    yield server
    server.stop()


def open_line_echo(port: int, first: bytes = b"") -> RawClient:
    """A client switched to line-echo; ``first`` rides in the request's packet."""
    client = RawClient(port)
    client.send(line_echo_request() + first)
    first_line, headers = status_line(client)
    assert first_line == b"HTTP/1.1 101 Switching Protocols"
    assert headers["upgrade"] == "line-echo"
    assert headers["connection"].lower() == "upgrade"
    return client


def test_line_echo_echoes_the_line_sent_with_the_request(line_echo: Example) -> None:
    client = open_line_echo(line_echo.port, b"hello\n")
    try:
        assert read_until(client, b"\n") == b"hello\n"
        client.send(b"second line\nthird ")
        assert read_until(client, b"\n") == b"second line\n"
        client.send(b"line\n\nfourth\r\n")
        assert read_until(client, b"\n") == b"third line\n"
        assert read_until(client, b"\n") == b"\n"
        assert read_until(client, b"\n") == b"fourth\r\n"
    finally:
        client.close()


def test_line_echo_head_with_several_lines_and_a_partial_one(line_echo: Example) -> None:
    client = open_line_echo(line_echo.port, b"one\ntwo\nthr")
    try:
        assert read_until(client, b"two\n") == b"one\ntwo\n"
        client.send(b"ee\n")
        assert read_until(client, b"\n") == b"three\n"
    finally:
        client.close()


def test_line_echo_ends_after_the_client_does(line_echo: Example) -> None:
    client = open_line_echo(line_echo.port, b"last\nunterminated")
    try:
        client.sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(client) == b"last\n"  # the unterminated line is dropped
    finally:
        client.close()


def test_line_echo_binary_lines_and_a_line_at_the_limit(line_echo: Example) -> None:
    line = bytes(range(256)).replace(b"\n", b"") * (MAX_LINE // 255 + 1)
    line = line[:MAX_LINE] + b"\n"
    client = open_line_echo(line_echo.port)
    try:
        client.send(line)
        assert read_until(client, b"\n") == line
    finally:
        client.close()


def test_line_echo_closes_on_a_line_too_long(line_echo: Example) -> None:
    client = open_line_echo(line_echo.port, b"short\n")
    try:
        assert read_until(client, b"\n") == b"short\n"
        try:
            client.send(b"x" * (MAX_LINE + 2))
        except OSError:
            pass  # already reset
        assert client.at_eof(10)
        assert b"x" not in client.buffer
    finally:
        client.close()


def test_line_echo_survives_a_client_reset(line_echo: Example) -> None:
    client = open_line_echo(line_echo.port, b"abc\n")
    assert read_until(client, b"\n") == b"abc\n"
    client.send(b"y\n" * 50_000)  # echoes in flight when the reset comes
    reset(client)
    client = open_line_echo(line_echo.port, b"after\n")
    try:
        assert read_until(client, b"\n") == b"after\n"
    finally:
        client.close()


def test_line_echo_sessions_are_independent(line_echo: Example) -> None:
    first = open_line_echo(line_echo.port)
    second = open_line_echo(line_echo.port)
    try:
        first.send(b"from first, part ")
        second.send(b"from second\n")
        assert read_until(second, b"\n") == b"from second\n"
        first.send(b"two\n")
        assert read_until(first, b"\n") == b"from first, part two\n"
    finally:
        first.close()
        second.close()


def test_line_echo_accepts_it_among_offered_protocols(line_echo: Example) -> None:
    client = RawClient(line_echo.port)
    try:
        client.send(line_echo_request("foo/2, LINE-ECHO") + b"hi\n")
        assert status_line(client)[0] == b"HTTP/1.1 101 Switching Protocols"
        assert read_until(client, b"\n") == b"hi\n"
    finally:
        client.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        line_echo_request("websocket"),
        line_echo_request("h2c"),
        line_echo_request("line-echo", version="HTTP/1.0"),  # HTTP/1.0 ignores Upgrade
        line_echo_request("line-echo").replace(b"GET", b"POST", 1),
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: line-echo\r\n\r\n",  # not in Connection
    ],
    ids=["websocket", "h2c", "http-1.0", "post", "no-connection-upgrade"],
)
def test_line_echo_refuses_other_upgrades(line_echo: Example, request_bytes: bytes) -> None:
    client = RawClient(line_echo.port)
    try:
        client.send(request_bytes + b"hello\n")
        status, headers, body = client.read_response()
        assert status == 426
        assert headers["upgrade"] == "line-echo"
        assert b"line-echo" in body
        assert client.at_eof(10)  # declined upgrade: the connection is closed
        assert b"hello" not in client.buffer
    finally:
        client.close()
    # ... and the server keeps serving
    client = open_line_echo(line_echo.port, b"still here\n")
    try:
        assert read_until(client, b"\n") == b"still here\n"
    finally:
        client.close()


# -- tunnel.py ------------------------------------------------------------------


class EchoTarget:
    """A TCP echo server in threads: echoes until EOF, then closes."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()


TARGET_BODY = b"hello from the target, through the tunnel\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(TARGET_BODY)))
        self.end_headers()
        self.wfile.write(TARGET_BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def echo_target() -> Iterator[EchoTarget]:
    target = EchoTarget()
    yield target
    target.close()


@pytest.fixture(scope="module")
def http_target() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture(scope="module")
def tunnel() -> Iterator[Example]:
    """The proxy without --allow: loopback targets only."""
    server = Example("tunnel.py")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def blackhole() -> Iterator[int]:
    """A loopback port whose connects hang: its accept queue (backlog 0) is full and never read.

    Linux drops the SYNs of a listener with a full queue, so the client retries
    until its timeout. Filled with connects that succeed until one times out.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    clients = []
    try:
        for _ in range(16):
            try:
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=0.5))
            except TimeoutError:
                break
        else:
            pytest.skip("cannot fill a listen queue here: no connect timeout to test")
        yield port
    finally:
        for client in clients:
            client.close()
        listener.close()


@pytest.fixture(scope="module")
def strict_tunnel(echo_target: EchoTarget, blackhole: int) -> Iterator[Example]:
    """The proxy with two targets allowed, one of them never answering, and short timeouts."""
    server = Example(
        "tunnel.py", "--allow", f"127.0.0.1:{echo_target.port}", "--allow", f"127.0.0.1:{blackhole}",
        "--connect-timeout", "0.5", "--idle-timeout", "1",
    )
    yield server
    server.stop()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, not listening, for the whole test."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def connect_request(target: str) -> bytes:
    return f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode()


def assert_tunnel_works(proxy: Example, echo_port: int) -> None:
    client = RawClient(proxy.port)
    try:
        client.send(connect_request(f"127.0.0.1:{echo_port}") + b"ping")
        assert status_line(client)[0] == b"HTTP/1.1 200 Connection Established"
        assert read_until(client, b"ping") == b"ping"
    finally:
        client.close()


def assert_refused(proxy: Example, target: str, status: int) -> bytes:
    """CONNECT ``target`` (with tunnelled bytes sent at once): ``status``, then closed."""
    client = RawClient(proxy.port)
    try:
        client.send(connect_request(target) + b"tunnelled bytes")
        code, headers, body = client.read_response()
        assert code == status, body
        assert headers["connection"] == "close"
        assert client.at_eof(10)
        return body
    finally:
        client.close()


def test_curl_through_the_tunnel(tunnel: Example, http_target: int) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    result = subprocess.run(
        [curl, "-s", "-S", "--max-time", "10", "-p", "-x", f"http://127.0.0.1:{tunnel.port}",
         f"http://127.0.0.1:{http_target}/"],
        capture_output=True, timeout=20, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == TARGET_BODY


def test_bytes_sent_with_the_connect_reach_the_target(tunnel: Example, echo_target: EchoTarget) -> None:
    client = RawClient(tunnel.port)
    try:
        client.send(connect_request(f"127.0.0.1:{echo_target.port}") + b"first bytes\x00\xff")
        first, headers = status_line(client)
        assert first == b"HTTP/1.1 200 Connection Established"
        assert headers == {}
        assert read_until(client, b"\xff") == b"first bytes\x00\xff"
        client.send(b"more")
        assert read_until(client, b"more") == b"more"
        # half-close: our EOF reaches the target, whose close comes back as EOF
        client.sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(client) == b""
    finally:
        client.close()


def test_target_closing_first_ends_the_tunnel(tunnel: Example, http_target: int) -> None:
    client = RawClient(tunnel.port)
    try:
        client.send(connect_request(f"localhost:{http_target}") + b"GET / HTTP/1.0\r\n\r\n")
        assert status_line(client)[0] == b"HTTP/1.1 200 Connection Established"
        response = read_to_eof(client)
        assert response.startswith(b"HTTP/1.0 200 ")
        assert response.endswith(TARGET_BODY)
    finally:
        client.close()


def test_megabytes_both_ways_at_once(tunnel: Example, echo_target: EchoTarget) -> None:
    payload = os.urandom(4 * 1024 * 1024)
    client = RawClient(tunnel.port, timeout=20)
    try:
        client.send(connect_request(f"127.0.0.1:{echo_target.port}"))
        assert status_line(client)[0] == b"HTTP/1.1 200 Connection Established"

        def send() -> None:
            client.send(payload)
            client.sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        received = client.buffer + read_to_eof(client)
        sender.join(20)
        assert len(received) == len(payload)
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    finally:
        client.close()


def test_client_reset_mid_tunnel(tunnel: Example, echo_target: EchoTarget) -> None:
    client = RawClient(tunnel.port)
    client.send(connect_request(f"127.0.0.1:{echo_target.port}") + b"abc")
    assert status_line(client)[0] == b"HTTP/1.1 200 Connection Established"
    assert read_until(client, b"abc") == b"abc"
    client.send(b"x" * 100_000)  # in flight both ways when the reset comes
    reset(client)
    assert_tunnel_works(tunnel, echo_target.port)  # (and no traceback: checked at teardown)


def test_idle_tunnel_is_closed(strict_tunnel: Example, echo_target: EchoTarget) -> None:
    client = RawClient(strict_tunnel.port)
    try:
        client.send(connect_request(f"127.0.0.1:{echo_target.port}") + b"abc")
        assert status_line(client)[0] == b"HTTP/1.1 200 Connection Established"
        assert read_until(client, b"abc") == b"abc"
        started = time.monotonic()
        assert client.at_eof(10)  # --idle-timeout 1
        assert 0.9 < time.monotonic() - started < 5
    finally:
        client.close()


@pytest.mark.parametrize(
    "target",
    ["10.0.0.1:80", "example.com:443", "0.0.0.0:80", "[2001:db8::1]:443", "localhost.example:80"],
)
def test_non_loopback_targets_are_forbidden(tunnel: Example, echo_target: EchoTarget, target: str) -> None:
    assert b"not allowed" in assert_refused(tunnel, target, 403)
    assert_tunnel_works(tunnel, echo_target.port)


def test_with_allow_only_the_listed_targets(
    strict_tunnel: Example, echo_target: EchoTarget, http_target: int
) -> None:
    assert_tunnel_works(strict_tunnel, echo_target.port)
    assert_refused(strict_tunnel, f"127.0.0.1:{http_target}", 403)  # another port
    assert_refused(strict_tunnel, f"localhost:{echo_target.port}", 403)  # another spelling of the host
    assert_refused(strict_tunnel, f"127.0.0.2:{echo_target.port}", 403)
    assert_tunnel_works(strict_tunnel, echo_target.port)


def test_allowed_target_that_does_not_answer_is_a_bad_gateway(
    strict_tunnel: Example, echo_target: EchoTarget, blackhole: int
) -> None:
    started = time.monotonic()
    body = assert_refused(strict_tunnel, f"127.0.0.1:{blackhole}", 502)
    assert b"did not answer within 0.5 s" in body
    assert time.monotonic() - started < 5
    assert_tunnel_works(strict_tunnel, echo_target.port)


def test_loopback_port_without_listener_is_a_bad_gateway(
    tunnel: Example, echo_target: EchoTarget, closed_port: int
) -> None:
    assert_refused(tunnel, f"127.0.0.1:{closed_port}", 502)
    assert_refused(tunnel, f"localhost:{closed_port}", 502)
    assert_tunnel_works(tunnel, echo_target.port)


@pytest.mark.parametrize(
    "target",
    [
        "garbage",
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:70000",
        "127.0.0.1:80x",
        "user@127.0.0.1:80",
        "http://127.0.0.1:80/",
        "[::1:80",
        "[not-ipv6]:80",
        "127.1:80",
        "999.0.0.1:80",
        "-bad-.example:80",
    ],
)
def test_bad_targets_are_bad_requests(tunnel: Example, echo_target: EchoTarget, target: str) -> None:
    assert_refused(tunnel, target, 400)
    assert_tunnel_works(tunnel, echo_target.port)


def test_ipv6_loopback_literal_is_parsed(tunnel: Example, closed_port: int) -> None:
    # Allowed (::1 is loopback); nothing listens on ::1 at this port: 502, not 400 or 403.
    assert_refused(tunnel, f"[::1]:{closed_port}", 502)


def test_other_methods_get_an_http_answer(tunnel: Example, echo_target: EchoTarget) -> None:
    client = RawClient(tunnel.port)
    try:
        client.send(b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, headers, body = client.read_response()
        assert status == 405
        assert headers["allow"] == "CONNECT"
        assert b"CONNECT" in body
    finally:
        client.close()
    assert_tunnel_works(tunnel, echo_target.port)


# -- node_migration.py ----------------------------------------------------------


@pytest.fixture(scope="module")
def node_migration() -> Iterator[Example]:
    server = Example("node_migration.py")
    yield server
    server.stop()


def test_node_migration_ping_pong(node_migration: Example) -> None:
    with connect(f"ws://127.0.0.1:{node_migration.port}/") as ws:
        node_migration.wait_for(b"a client connected!")
        ws.send("hello")  # no answer to anything but "ping"
        ws.send("ping")
        assert ws.recv(timeout=5) == "pong"
        ws.send("ping")
        assert ws.recv(timeout=5) == "pong"
    with connect(f"ws://127.0.0.1:{node_migration.port}/") as ws:
        node_migration.wait_for(b"a client connected!")
        ws.send(b"ping")  # binary: event.data is bytes, not "ping"
        ws.send("ping")
        assert ws.recv(timeout=5) == "pong"

