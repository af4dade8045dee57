"""permessage-deflate with real clients: the ``websockets`` client and Node's ``ws``
client against ``examples/echo.py --compression deflate``, run as a process.

takeover's own servers with compression (a decompression bomb, ``Server(compression=)``,
``upgrade_websocket(compression=)``, ``broadcast``, ``takeover serve --compression``,
Werkzeug's threads) are tests/servers/test_deflate_servers.py.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.sync.client import connect

from tests.paths import EXAMPLES
from tests.processes import ServerProcess, start_server

TEXT, BINARY, CLOSE = 0x1, 0x2, 0x8
RSV1 = 0x40
TAIL = b"\x00\x00\xff\xff"


@pytest.fixture(scope="module")
def deflate_server() -> Iterator[ServerProcess]:
    server = start_server(EXAMPLES / "echo.py", "--idle-timeout", "0", "--compression", "deflate")
    yield server
    server.stop()


# -- the websockets client ----------------------------------------------------------


def test_websockets_negotiates_deflate(deflate_server: ServerProcess) -> None:
    with connect(deflate_server.url, compression="deflate") as ws:
        # websockets offers "permessage-deflate; client_max_window_bits".
        assert ws.response.headers["Sec-WebSocket-Extensions"] == "permessage-deflate"
        assert [type(ext).__name__ for ext in ws.protocol.extensions] == ["PerMessageDeflate"]
        for message in ["héllo, wörld", "x" * 5000, b"\x00" * 100_000, os.urandom(3000), "", b""]:
            ws.send(message)
            reply = ws.recv(timeout=10)
            assert reply == message and type(reply) is type(message)


def test_websockets_16_mib_messages(deflate_server: ServerProcess) -> None:
    binary = os.urandom(8 * 1024 * 1024) + bytes(8 * 1024 * 1024)
    text = "ü" * (8 * 1024 * 1024)
    with connect(deflate_server.url, compression="deflate", max_size=None) as ws:
        ws.send(binary)
        reply = ws.recv(timeout=60)
        assert hashlib.sha256(reply).digest() == hashlib.sha256(binary).digest()
        ws.send(text)
        assert ws.recv(timeout=60) == text


def test_websockets_many_messages_share_the_window(deflate_server: ServerProcess) -> None:
    with connect(deflate_server.url, compression="deflate") as ws:
        messages = [f'{{"id": {index}, "kind": "update", "value": "{index * 7}"}}' for index in range(500)]
        for message in messages:
            ws.send(message)
        assert [ws.recv(timeout=10) for _ in messages] == messages


@pytest.mark.parametrize(
    ("factory", "header"),
    [
        (
            ClientPerMessageDeflateFactory(server_no_context_takeover=True, client_no_context_takeover=True),
            "permessage-deflate; server_no_context_takeover",
        ),
        (
            ClientPerMessageDeflateFactory(server_max_window_bits=10, client_max_window_bits=9),
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
        ),
        (
            ClientPerMessageDeflateFactory(server_max_window_bits=9, client_max_window_bits=None),
            "permessage-deflate; server_max_window_bits=9",
        ),
    ],
    ids=["no-context-takeover", "window-bits", "small-window"],
)
def test_websockets_with_parameters(
    deflate_server: ServerProcess, factory: ClientPerMessageDeflateFactory, header: str
) -> None:
    with connect(deflate_server.url, extensions=[factory], compression=None, max_size=None) as ws:
        assert ws.response.headers["Sec-WebSocket-Extensions"] == header
        text = "".join(f"line {index}: the same words again\n" for index in range(20_000))
        for message in [text, text.encode(), "small"]:
            ws.send(message)
            assert ws.recv(timeout=30) == message


def test_no_compression_unless_the_server_enables_it(echo_server: ServerProcess) -> None:
    with connect(echo_server.url, compression="deflate") as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send("plain")
        assert ws.recv(timeout=5) == "plain"


def test_a_client_without_deflate_gets_plain_frames(deflate_server: ServerProcess) -> None:
    with connect(deflate_server.url, compression=None) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send("x" * 10_000)
        assert ws.recv(timeout=5) == "x" * 10_000


# -- Node's ws client -------------------------------------------------------------


@pytest.mark.node
def test_node_ws_negotiates_deflate(deflate_server: ServerProcess) -> None:
    from tests.interop import test_node_client as node_client  # skips without node and ws
    result = node_client.run_client(deflate_server.url, "large-binary", str(4 * 1024 * 1024))
    assert result["extensions"] == "permessage-deflate"
    assert result["receivedSha256"] == result["sentSha256"]
    ordered = node_client.run_client(deflate_server.url, "ordered", "300")
    assert ordered["extensions"] == "permessage-deflate"
    assert [m["text"] for m in ordered["messages"]] == [str(i) for i in range(300)]
