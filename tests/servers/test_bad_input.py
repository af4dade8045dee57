"""The reliability issue's bad-input list, end to end over real sockets against a running server.

Where each item is covered (the sans-I/O tests under tests/protocol/ feed bytes to the core;
the others go over a socket to a running server). Every frame violation here
(tests/bad_frames.py) is also fed to the core alone by tests/protocol/test_bad_input.py:

* Oversized request lines: here, ``test_an_oversized_request_line_gets_414``
  (gevent answers 414 URI Too Long, as RFC 9112 §3 asks and docs/semantics.rst
  states, not 431: the 431 limit counts the header fields after the line).
* Oversized headers (431): servers/test_server_events.py ``TestClientErrors::
  test_oversized_headers_get_431`` (a small ``max_header_size``) and
  ``test_too_many_headers_get_431`` (the 100-line limit); here,
  ``test_headers_over_the_default_16_kib_get_431`` (the default, on examples/echo.py).
* Slowloris (408): servers/test_server_events.py ``TestClientErrors::test_slow_headers_get_408``
  (headers that stop); here, ``test_slowloris_gets_408_at_the_header_timeout``
  (a byte at a time, in the request line or in the headers).
* 64-bit lengths with the top bit set: protocol/test_connection.py
  ``test_64_bit_length_with_top_bit_set``; here, ``test_frame_violations[length-top-bit-*]``.
* Non-minimal lengths: protocol/test_connection.py ``test_non_minimal_lengths``,
  ``test_non_minimal_length_fails_from_header``; here, ``test_frame_violations[non-minimal-*]``.
* Control frames over 125 bytes: protocol/test_connection.py
  ``test_control_frame_over_125_bytes`` (and ``..._fails_from_header``); servers/test_wire.py
  ``test_protocol_violations_close_with_the_rfc_code[big-control]`` (a ping); here,
  ``test_frame_violations[big-*]`` (ping, pong, close, from the header alone).
* Fragmented control frames: protocol/test_connection.py ``test_fragmented_control_frame``;
  here, ``test_frame_violations[fragmented-*]``.
* Reserved opcodes and bits: protocol/test_connection.py ``test_reserved_bits``,
  ``test_reserved_opcodes``; servers/test_wire.py ``[rsv1]`` and ``[reserved-opcode]`` (0x3);
  here, ``test_frame_violations[opcode-*]`` (every reserved opcode) and ``[rsv*]``.
* Invalid close codes and reasons: protocol/test_connection.py ``TestSection7_4StatusCodes``,
  ``test_one_byte_close_payload``, ``test_invalid_utf8_reason``,
  ``test_truncated_utf8_reason``; here, ``test_invalid_close_codes_get_1002``,
  ``test_invalid_close_payloads`` and, for contrast, ``test_valid_close_codes_are_echoed``.
* Any bytes at all: protocol/test_properties.py (the parser never raises) and
  protocol/test_fuzz_corpus.py.

Every case also checks that the server goes on serving: a new client's echo round-trip.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.event
import gevent.select
import gevent.socket
import pytest

from takeover import create_server, upgrade_websocket
from takeover.server import Server
from tests.bad_frames import VIOLATIONS
from tests.clients import RawClient, assert_echoes, handshake_request, upgraded_client
from tests.frames import client_frame
from tests.processes import ServerProcess

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


# -- HTTP: request lines and headers ---------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /" + b"a" * 100_000,  # a line that never ends
    ],
    ids=["9-kib", "endless"],
)
def test_an_oversized_request_line_gets_414(echo_server: ServerProcess, request_bytes: bytes) -> None:
    client = RawClient(echo_server.port)
    try:
        client.send(request_bytes)
        status, headers, _ = client.read_response()
        assert status == 414 and headers["connection"] == "close"
        assert client.at_eof()
    finally:
        client.close()
    assert_echoes(echo_server.port)


def test_headers_over_the_default_16_kib_get_431(echo_server: ServerProcess) -> None:
    just_under = handshake_request(headers={"X-Filler": "a" * (15 * 1024)})
    client = RawClient(echo_server.port)
    try:
        client.send(just_under + client_frame(TEXT, b"under the limit"))
        assert client.read_response()[0] == 101
        assert client.read_frame() == (TEXT, True, b"under the limit")
    finally:
        client.close()
    client = RawClient(echo_server.port)
    try:
        client.send(handshake_request(headers={"X-Filler": "a" * (16 * 1024)}))
        status, headers, body = client.read_response()
        assert status == 431 and headers["connection"] == "close"
        assert b"too large" in body
        assert client.at_eof()
    finally:
        client.close()
    assert_echoes(echo_server.port)


@pytest.fixture
def slow_server() -> Iterator[Server]:
    server = create_server(header_timeout=0.5)

    def echo(request: Any, sock: Any, head: bytes) -> None:
        ws, _ = upgrade_websocket(request, socket=sock, head=head)
        ws.onmessage = lambda event: ws.send(event.data)

    server.on("upgrade", echo)
    server.listen(0)
    yield server
    server.close(timeout=1)


@pytest.mark.parametrize(
    ("sent_at_once", "trickled"),
    [
        (b"", handshake_request()),  # from the first byte of the request line
        (b"GET / HTTP/1.1\r\n", handshake_request()[16:]),  # the request line, then header bytes
    ],
    ids=["request-line", "headers"],
)
def test_slowloris_gets_408_at_the_header_timeout(
    slow_server: Server, sent_at_once: bytes, trickled: bytes
) -> None:
    """A byte every 50 ms never completes the headers in time: the timeout is for all of them."""
    port = slow_server.address[1]
    client = RawClient(port, connect=gevent.socket.create_connection)
    answered = gevent.event.Event()

    def trickle() -> None:
        for byte in trickled:
            # Stop once the server has answered (it reads no more after that).
            if answered.is_set() or gevent.select.select([client.sock], [], [], 0)[0]:
                return
            try:
                client.send(bytes([byte]))
            except OSError:
                return
            gevent.sleep(0.05)  # the pace of the attack, not a synchronisation

    started = time.monotonic()
    if sent_at_once:
        client.send(sent_at_once)
    feeder = gevent.spawn(trickle)
    try:
        assert_echoes(port, connect=gevent.socket.create_connection)  # others are served meanwhile
        status, headers, body = client.read_response()
        answered.set()
        elapsed = time.monotonic() - started
        assert status == 408 and headers["connection"] == "close"
        assert b"took too long" in body
        assert 0.45 <= elapsed <= 2.5, elapsed
        assert client.at_eof()
    finally:
        answered.set()
        feeder.join(5)
        client.close()
    assert_echoes(port, connect=gevent.socket.create_connection)


# -- WebSocket frames ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"), [(data, code) for _, data, code in VIOLATIONS], ids=[name for name, _, _ in VIOLATIONS]
)
def test_frame_violations(echo_server: ServerProcess, data: bytes, code: int) -> None:
    client = upgraded_client(echo_server.port)
    try:
        client.send(client_frame(TEXT, b"before"))
        assert client.read_frame() == (TEXT, True, b"before")
        client.send(data)
        assert client.read_close()[0] == code
        client.send(client_frame(CLOSE, code.to_bytes(2, "big")))
        assert client.at_eof()
    finally:
        client.close()
    assert_echoes(echo_server.port)


INVALID_CLOSE_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


def close_answer(port: int, payload: bytes) -> tuple[int | None, str]:
    """Send a close frame with ``payload``; the server's close code and reason.

    The client then answers with the same code, and the server must hang up.
    """
    client = upgraded_client(port)
    try:
        client.send(client_frame(CLOSE, payload))
        code, reason = client.read_close()
        assert code is not None
        client.send(client_frame(CLOSE, code.to_bytes(2, "big")))
        assert client.at_eof()
    finally:
        client.close()
    assert_echoes(port)
    return code, reason


@pytest.mark.parametrize("code", INVALID_CLOSE_CODES)
def test_invalid_close_codes_get_1002(echo_server: ServerProcess, code: int) -> None:
    payload = code.to_bytes(2, "big") + b"why"
    assert close_answer(echo_server.port, payload) == (1002, f"Invalid close code {code}")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\x03", 1002),  # one byte: not a code, not empty (§5.5.1)
        ((1000).to_bytes(2, "big") + b"\xff\xfe", 1007),  # the reason must be UTF-8 (§5.5.1, §8.1)
        ((1000).to_bytes(2, "big") + "é".encode()[:1], 1007),  # truncated UTF-8
        ((1000).to_bytes(2, "big") + b"\xed\xa0\x80", 1007),  # a UTF-16 surrogate
    ],
    ids=["one-byte", "invalid-utf8", "truncated-utf8", "surrogate"],
)
def test_invalid_close_payloads(echo_server: ServerProcess, payload: bytes, code: int) -> None:
    assert close_answer(echo_server.port, payload)[0] == code


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 1014, 3000, 4999])
def test_valid_close_codes_are_echoed(echo_server: ServerProcess, code: int) -> None:
    client = upgraded_client(echo_server.port)
    try:
        client.send(client_frame(CLOSE, code.to_bytes(2, "big") + "é".encode() * 61 + b"x"))  # 125 bytes
        assert client.read_close() == (code, "")
        assert client.at_eof()
    finally:
        client.close()
