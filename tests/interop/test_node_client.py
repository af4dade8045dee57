"""Interop with Node's `ws` client (tests/node/client.js) against examples/echo.py, run as a process.

Needs ``node`` on PATH and ``cd tests/node && npm install`` (``make test`` does it when npm exists).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.paths import EXAMPLES, NODE_DIR
from tests.processes import ServerProcess, start_server

CLIENT = NODE_DIR / "client.js"
NODE = shutil.which("node")

if NODE is None:
    pytest.skip("node is not on PATH", allow_module_level=True)
if not (NODE_DIR / "node_modules" / "ws").is_dir():
    pytest.skip("Node's ws is not installed (cd tests/node && npm install)", allow_module_level=True)

pytestmark = pytest.mark.node


def run_client(url: str, scenario: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    """Run one client.js scenario and return its JSON result."""
    assert NODE is not None
    completed = subprocess.run(
        [NODE, str(CLIENT), url, scenario, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=NODE_DIR,
    )
    assert completed.returncode == 0, (
        f"client.js {scenario} exited {completed.returncode}\n"
        f"stdout: {completed.stdout}\nstderr: {completed.stderr}"
    )
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def test_text_is_echoed_as_text(echo_server: ServerProcess) -> None:
    result = run_client(echo_server.url, "text")
    assert result["messages"] == [{"isBinary": False, "length": 19, "text": "héllo, wörld 🌍"}]
    assert result["closeCode"] == 1000


def test_binary_is_echoed_as_binary(echo_server: ServerProcess) -> None:
    result = run_client(echo_server.url, "binary")
    [message] = result["messages"]
    assert message["isBinary"] is True
    assert base64.b64decode(message["text"]) == b"\x00\xff\x10\x80"
    assert result["closeCode"] == 1000


@pytest.mark.parametrize(("scenario", "is_binary"), [("empty-text", False), ("empty-binary", True)])
def test_empty_messages_are_echoed(echo_server: ServerProcess, scenario: str, is_binary: bool) -> None:
    result = run_client(echo_server.url, scenario)
    assert result["messages"] == [{"isBinary": is_binary, "length": 0, "text": ""}]


def test_16_mib_binary_message(echo_server: ServerProcess) -> None:
    result = run_client(echo_server.url, "large-binary", str(16 * 1024 * 1024))
    assert result["isBinary"] is True
    assert result["receivedLength"] == result["sentLength"] == 16 * 1024 * 1024
    assert result["receivedSha256"] == result["sentSha256"]


def test_mixed_messages_keep_their_order_and_type(echo_server: ServerProcess) -> None:
    result = run_client(echo_server.url, "ordered", "200")
    assert result["messages"] == [{"isBinary": bool(i % 2), "text": str(i)} for i in range(200)]


def test_ping_is_answered_with_a_pong(echo_server: ServerProcess) -> None:
    result = run_client(echo_server.url, "ping", "are you there?")
    assert result["pong"] == "are you there?"


@pytest.mark.parametrize(("code", "reason"), [(4001, "bye"), (1000, "")])
def test_close_code_round_trips(echo_server: ServerProcess, code: int, reason: str) -> None:
    result = run_client(echo_server.url, "close", str(code), reason)
    # RFC 6455 §5.5.1: the server answers with a close frame echoing the status code.
    assert result["closeCode"] == code
    # ws waits 30 s for the server to drop TCP after the closing handshake (§7.1.1: the
    # server closes first); a prompt 'close' event means the server did.
    assert result["elapsedMs"] < 5000


def test_no_subprotocol_is_selected_when_the_server_has_none(echo_server: ServerProcess) -> None:
    result = run_client(echo_server.url, "subprotocol", "chat")
    # The server accepts the upgrade without selecting a protocol, which RFC 6455 §4.1
    # allows: the client must fail only if the server selects one it did not offer.
    assert result["status"] == 101
    assert result["protocolHeader"] is None
    if result["opened"]:
        assert result["protocol"] == ""
    else:
        # ws 8 is stricter than the RFC (like browsers): it fails the handshake itself.
        assert result["error"] == "Server sent no subprotocol"


@pytest.fixture(scope="module")
def chat_server() -> Iterator[ServerProcess]:
    server = start_server(EXAMPLES / "echo.py", "--idle-timeout", "0", "--protocol", "chat")
    yield server
    server.stop()


def test_offered_subprotocol_is_selected(chat_server: ServerProcess) -> None:
    result = run_client(chat_server.url, "subprotocol", "superchat", "chat")
    assert result["status"] == 101
    assert result["protocolHeader"] == "chat"
    assert result["opened"] is True
    assert result["protocol"] == "chat"
    assert result["echo"] == {"isBinary": False, "length": 13, "text": "with protocol"}


def test_unknown_subprotocol_is_not_selected(chat_server: ServerProcess) -> None:
    result = run_client(chat_server.url, "subprotocol", "superchat")
    assert result["status"] == 101
    assert result["protocolHeader"] is None
    assert result.get("protocol", "") == ""
