"""The reliability issue's bad-input list, end to end over real sockets against a running server.

Where each item is covered (the sans-I/O tests feed bytes to the core; the
others go over a socket to a running server):

* Oversized request lines: here, ``test_an_oversized_request_line_gets_414``
  (gevent answers 414 URI Too Long, as RFC 9112 §3 asks and docs/semantics.rst
  states, not 431: the 431 limit counts the header fields after the line).
* Oversized headers (431): test_server_events.py ``TestClientErrors::
  test_oversized_headers_get_431`` (a small ``max_header_size``) and
  ``test_too_many_headers_get_431`` (the 100-line limit); here,
  ``test_headers_over_the_default_16_kib_get_431`` (the default, on examples/echo.py).
* Slowloris (408): test_server_events.py ``TestClientErrors::test_slow_headers_get_408``
  (headers that stop); here, ``test_slowloris_gets_408_at_the_header_timeout``
  (a byte at a time, in the request line or in the headers).
* 64-bit lengths with the top bit set: test_connection.py
  ``test_64_bit_length_with_top_bit_set``; here, ``test_frame_violations[length-top-bit-*]``.
* Non-minimal lengths: test_connection.py ``test_non_minimal_lengths``,
  ``test_non_minimal_length_fails_from_header``; here, ``test_frame_violations[non-minimal-*]``.
* Control frames over 125 bytes: test_connection.py ``test_control_frame_over_125_bytes``
  (and ``..._fails_from_header``); test_wire.py ``test_protocol_violations_close_with_the_rfc_code
  [big-control]`` (a ping); here, ``test_frame_violations[big-*]`` (ping, pong, close,
  from the header alone).
* Fragmented control frames: test_connection.py ``test_fragmented_control_frame``;
  here, ``test_frame_violations[fragmented-*]``.
* Reserved opcodes and bits: test_connection.py ``test_reserved_bits``,
  ``test_reserved_opcodes``; test_wire.py ``[rsv1]`` and ``[reserved-opcode]`` (0x3);
  here, ``test_frame_violations[opcode-*]`` (every reserved opcode) and ``[rsv*]``.
* Invalid close codes and reasons: test_connection.py ``TestSection7_4StatusCodes``,
  ``test_one_byte_close_payload``, ``test_invalid_utf8_reason``,
  ``test_truncated_utf8_reason``; here, ``test_invalid_close_codes_get_1002``,
  ``test_invalid_close_payloads`` and, for contrast, ``test_valid_close_codes_are_echoed``.
* Any bytes at all: test_properties.py (the parser never raises) and test_fuzz_corpus.py.

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
from conftest import (
    RawClient,
    ServerProcess,
    assert_echoes,
    client_frame,
    handshake_request,
    upgraded_client,
)

from takeover import create_server, upgrade_websocket
from takeover.server import Server

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
MASK = b"\x01\x02\x03\x04"


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


def header(first: int, length: int, form: int) -> bytes:
    """A masked frame header with ``length`` in the 7-, 16- or 64-bit ``form``, and the key."""
    if form == 7:
        return bytes((first, 0x80 | length)) + MASK
    if form == 16:
        return bytes((first, 0x80 | 126)) + length.to_bytes(2, "big") + MASK
    return bytes((first, 0x80 | 127)) + length.to_bytes(8, "big") + MASK


# Each is refused from what is sent: most from the header alone, before any payload.
VIOLATIONS = [
    # §5.2: the most significant bit of a 64-bit length must be 0.
    ("length-top-bit-alone", header(0x82, 1 << 63, 64), 1002),
    ("length-top-bit-and-small", header(0x82, (1 << 63) | 5, 64), 1002),
    ("length-all-ones", header(0x82, (1 << 64) - 1, 64), 1002),
    # §5.2: "the minimal number of bytes MUST be used to encode the length".
    ("non-minimal-16-for-5", header(0x82, 5, 16), 1002),
    ("non-minimal-16-for-125", header(0x82, 125, 16), 1002),
    ("non-minimal-64-for-200", header(0x82, 200, 64), 1002),
    ("non-minimal-64-for-65535", header(0x82, 65535, 64), 1002),
    # §5.5: control frames carry at most 125 bytes.
    ("big-ping", header(0x89, 126, 16), 1002),
    ("big-pong", header(0x8A, 126, 16), 1002),
    ("big-close", header(0x88, 126, 16), 1002),
    ("big-close-64", header(0x88, 70000, 64), 1002),
    # §5.5: control frames must not be fragmented.
    ("fragmented-ping", client_frame(PING, b"p", fin=False), 1002),
    ("fragmented-pong", client_frame(PONG, b"p", fin=False), 1002),
    ("fragmented-close", client_frame(CLOSE, (1000).to_bytes(2, "big"), fin=False), 1002),
    (
        "fragmented-ping-inside-a-message",
        client_frame(TEXT, b"a", fin=False) + client_frame(PING, b"", fin=False),
        1002,
    ),
    # §5.2: reserved opcodes and bits (no extension negotiated).
    *[(f"opcode-{op:#x}", client_frame(op, b"x"), 1002) for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15)],
    ("rsv2", client_frame(TEXT, b"x", rsv=0x20), 1002),
    ("rsv3", client_frame(TEXT, b"x", rsv=0x10), 1002),
    ("rsv-all", client_frame(BINARY, b"x", rsv=0x70), 1002),
    ("rsv1-on-a-ping", client_frame(PING, b"x", rsv=0x40), 1002),
    ("rsv2-on-a-continuation", client_frame(TEXT, b"a", fin=False) + client_frame(0x0, b"b", rsv=0x20), 1002),
]


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
