"""Interop with the `websockets` client against examples/echo.py, run as a process."""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Iterator

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.paths import EXAMPLES
from tests.processes import ServerProcess, start_server


def test_text_is_echoed_as_text(echo_server: ServerProcess) -> None:
    with connect(echo_server.url) as ws:
        ws.send("héllo, wörld")
        assert ws.recv(timeout=5) == "héllo, wörld"


def test_binary_is_echoed_as_binary(echo_server: ServerProcess) -> None:
    with connect(echo_server.url) as ws:
        ws.send(b"\x00\xff\x10")
        assert ws.recv(timeout=5) == b"\x00\xff\x10"


@pytest.mark.parametrize("message", ["", b""], ids=["text", "binary"])
def test_empty_messages_are_echoed(echo_server: ServerProcess, message: str | bytes) -> None:
    with connect(echo_server.url) as ws:
        ws.send(message)
        reply = ws.recv(timeout=5)
        assert reply == message and type(reply) is type(message)


def test_16_mib_binary_message(echo_server: ServerProcess) -> None:
    payload = os.urandom(16 * 1024 * 1024)
    with connect(echo_server.url, max_size=None) as ws:
        ws.send(payload)
        reply = ws.recv(timeout=30)
    assert hashlib.sha256(reply).digest() == hashlib.sha256(payload).digest()


def test_16_mib_text_message(echo_server: ServerProcess) -> None:
    payload = "ü" * (8 * 1024 * 1024)
    with connect(echo_server.url, max_size=None) as ws:
        ws.send(payload)
        assert ws.recv(timeout=30) == payload


def test_many_messages_keep_their_order(echo_server: ServerProcess) -> None:
    with connect(echo_server.url) as ws:
        for index in range(500):
            ws.send(str(index))
        assert [ws.recv(timeout=5) for _ in range(500)] == [str(i) for i in range(500)]


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (1001, "away"), (4001, "bye"), (3000, "")])
def test_close_code_round_trips(echo_server: ServerProcess, code: int, reason: str) -> None:
    with connect(echo_server.url) as ws:
        ws.close(code, reason)
        # RFC 6455 §5.5.1: the server echoes the status code it received.
        assert ws.protocol.close_rcvd is not None
        assert ws.protocol.close_rcvd.code == code


@pytest.fixture(scope="module")
def chat_server() -> Iterator[ServerProcess]:
    server = start_server(EXAMPLES / "echo.py", "--idle-timeout", "0", "--protocol", "chat")
    yield server
    server.stop()


def test_subprotocol_offered_is_chosen(chat_server: ServerProcess) -> None:
    with connect(chat_server.url, subprotocols=["superchat", "chat"]) as ws:
        assert ws.subprotocol == "chat"
        ws.send("x")
        assert ws.recv(timeout=5) == "x"


def test_no_subprotocol_when_the_client_offers_none(chat_server: ServerProcess) -> None:
    with connect(chat_server.url) as ws:
        assert ws.subprotocol is None


def test_no_subprotocol_when_ours_is_not_offered(chat_server: ServerProcess) -> None:
    # Deno: without a chosen protocol no header is sent; RFC 6455 §4.1 lets the
    # client decide whether to go on without one (websockets does).
    with connect(chat_server.url, subprotocols=["other"]) as ws:
        assert ws.subprotocol is None


def test_plain_http_gets_an_answer_and_upgrades_still_work(echo_server: ServerProcess) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(echo_server.url, additional_headers={"Sec-WebSocket-Version": "8"})
    assert info.value.response.status_code == 426
    with connect(echo_server.url) as ws:
        ws.send("still serving")
        assert ws.recv(timeout=5) == "still serving"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_echo_example_stops_cleanly_on_signals(signum: int) -> None:
    server = start_server(EXAMPLES / "echo.py")
    with connect(server.url) as ws:
        ws.send("before the signal")
        assert ws.recv(timeout=5) == "before the signal"
    server.process.send_signal(signum)
    assert server.process.wait(10) == 0
