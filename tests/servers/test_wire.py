"""Bytes on the wire against examples/echo.py: packet splits, bad handshakes, close codes."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.clients import RawClient, assert_echoes, handshake_request, upgraded_client
from tests.frames import client_frame
from tests.paths import EXAMPLES
from tests.processes import ServerProcess, start_server

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def frames() -> bytes:
    return (
        client_frame(TEXT, b"one")
        + client_frame(BINARY, b"\x00two")
        + client_frame(TEXT, b"thr", fin=False)
        + client_frame(PING, b"p")  # a control frame inside a fragmented message (§5.4)
        + client_frame(0x0, b"ee")
        + client_frame(TEXT, b"x" * 200)
    )


EXPECTED = [(TEXT, b"one"), (BINARY, b"\x00two"), (PONG, b"p"), (TEXT, b"three"), (TEXT, b"x" * 200)]


def read_frames(client: RawClient, count: int) -> list[tuple[int, bytes]]:
    return [(opcode, payload) for opcode, _, payload in (client.read_frame() for _ in range(count))]


def test_handshake_and_frames_in_one_packet(raw_client: RawClient) -> None:
    # The frames sit in the server's buffer past the headers: the `head` bytes.
    raw_client.send(handshake_request() + frames())
    status, headers, _ = raw_client.read_response()
    assert status == 101
    assert headers["sec-websocket-accept"] == "BACScCJPNqyz+UBoqMH89VmURoA="
    assert read_frames(raw_client, len(EXPECTED)) == EXPECTED


def test_everything_in_7_byte_pieces(raw_client: RawClient) -> None:
    raw_client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = handshake_request() + frames()
    for start in range(0, len(data), 7):
        raw_client.send(data[start : start + 7])
    assert raw_client.read_response()[0] == 101
    assert read_frames(raw_client, len(EXPECTED)) == EXPECTED


def test_upgrade_after_a_keep_alive_request(raw_client: RawClient) -> None:
    raw_client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = raw_client.read_response()
    assert status == 426 and b"WebSocket" in body
    raw_client.send(handshake_request() + client_frame(TEXT, b"after keep-alive"))
    assert raw_client.read_response()[0] == 101
    assert raw_client.read_frame() == (TEXT, True, b"after keep-alive")


@pytest.mark.parametrize(
    ("request_bytes", "status", "message"),
    [
        (handshake_request(method="POST"), 405, "must be a GET request"),
        (handshake_request(version="HTTP/1.0"), 400, "HTTP/1.1 or later"),
        (handshake_request(omit=("Sec-WebSocket-Key",)), 400, "'sec-websocket-key' header must be set"),
        (handshake_request(headers={"Sec-WebSocket-Key": "short"}), 400, "base64 encoding of 16 bytes"),
        (handshake_request(headers={"Sec-WebSocket-Version": "8"}), 426, "version 13"),
    ],
    ids=["method", "http-version", "missing-key", "bad-key", "version"],
)
def test_bad_handshakes_are_answered_and_the_server_keeps_serving(
    echo_server: ServerProcess, request_bytes: bytes, status: int, message: str
) -> None:
    client = RawClient(echo_server.port)
    try:
        client.send(request_bytes)
        got_status, headers, body = client.read_response()
        assert got_status == status
        assert message in body.decode()
        assert headers["connection"] == "close"
        if status == 426:
            assert headers["sec-websocket-version"] == "13"
        if status == 405:
            assert headers["allow"] == "GET"
        assert client.at_eof()
    finally:
        client.close()
    assert_echoes(echo_server.port)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (client_frame(TEXT, b"unmasked", mask=None), 1002),  # §5.1
        (client_frame(TEXT, b"\xff\xfe"), 1007),  # §8.1
        (client_frame(TEXT, b"ok", rsv=0x40), 1002),  # §5.2, no extension negotiated
        (client_frame(0x3, b""), 1002),  # reserved opcode
        (client_frame(PING, b"x" * 126), 1002),  # §5.5
        (client_frame(0x0, b"orphan"), 1002),  # §5.4
        # Only the header of a 65 MiB message: refused before its payload arrives.
        (bytes((0x82, 0xFF)) + (65 * 1024 * 1024).to_bytes(8, "big") + b"mask", 1009),
    ],
    ids=["unmasked", "bad-utf8", "rsv1", "reserved-opcode", "big-control", "orphan-continuation", "too-big"],
)
def test_protocol_violations_close_with_the_rfc_code(
    echo_server: ServerProcess, frame: bytes, code: int
) -> None:
    client = upgraded_client(echo_server.port)
    try:
        client.send(frame)
        assert client.read_close()[0] == code
        client.send(client_frame(CLOSE, code.to_bytes(2, "big")))
        assert client.at_eof()
    finally:
        client.close()
    assert_echoes(echo_server.port)


def test_client_close_is_echoed_then_the_server_closes_tcp(echo_server: ServerProcess) -> None:
    client = upgraded_client(echo_server.port)
    try:
        client.send(client_frame(CLOSE, (4321).to_bytes(2, "big") + b"done"))
        assert client.read_close() == (4321, "")
        assert client.at_eof()  # §7.1.1: the server closes the TCP connection first
    finally:
        client.close()


def test_empty_close_is_answered_with_an_empty_close(echo_server: ServerProcess) -> None:
    client = upgraded_client(echo_server.port)
    try:
        client.send(client_frame(CLOSE, b""))
        assert client.read_close() == (None, "")
    finally:
        client.close()


def test_client_vanishing_mid_frame_does_not_disturb_others(echo_server: ServerProcess) -> None:
    client = upgraded_client(echo_server.port)
    client.send(client_frame(BINARY, b"y" * 1000)[:300])
    client.close()
    assert_echoes(echo_server.port)


@pytest.fixture(scope="module")
def idle_server() -> Iterator[ServerProcess]:
    server = start_server(EXAMPLES / "echo.py", "--idle-timeout", "2")
    yield server
    server.stop()


class TestIdleTimeout:
    """Deno's idleTimeout: a ping after idle/2 of silence, close 1001 after idle."""

    def test_a_silent_client_is_pinged_then_closed_with_1001(self, idle_server: ServerProcess) -> None:
        client = upgraded_client(idle_server.port)
        try:
            started = time.monotonic()
            opcode, _, _ = client.read_frame()
            pinged = time.monotonic() - started
            assert opcode == PING
            assert 0.8 <= pinged <= 1.8  # idle/2 = 1 s
            assert client.read_close() == (1001, "No response from ping frame.")
            closed = time.monotonic() - started
            assert 1.8 <= closed <= 3.5  # idle = 2 s
            assert client.at_eof()
        finally:
            client.close()

    def test_a_client_that_answers_pings_stays_open(self, idle_server: ServerProcess) -> None:
        client = upgraded_client(idle_server.port)
        try:
            started = time.monotonic()
            pings = 0
            while time.monotonic() - started < 5:  # 2.5 idle periods
                opcode, _, payload = client.read_frame()
                assert opcode == PING
                pings += 1
                client.send(client_frame(PONG, payload))
            assert pings >= 3
            client.send(client_frame(TEXT, b"alive"))
            assert client.read_frame() == (TEXT, True, b"alive")
        finally:
            client.close()

    def test_any_received_frame_resets_the_timer(self, idle_server: ServerProcess) -> None:
        client = upgraded_client(idle_server.port)
        try:
            client.sock.settimeout(0.6)
            for _ in range(6):  # 3.6 s of messages every 0.6 s: never silent for idle/2
                client.send(client_frame(TEXT, b"tick"))
                assert client.read_frame() == (TEXT, True, b"tick")
                with pytest.raises(TimeoutError):
                    client.read_frame()  # nothing else, in particular no ping
        finally:
            client.close()
