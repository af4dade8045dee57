"""Backpressure seen from outside: the RSS of a server run as a process
(tests/servers/apps/firehose.py) that sends at a peer that reads nothing.

The limits themselves (``buffered_amount``, the high-water mark, 1008 at
``max_buffered_amount``) are tests/io/test_backpressure.py, in-process."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from tests.clients import RawClient, handshake_request
from tests.paths import APPS
from tests.processes import start_server

KIB = 1024
FIREHOSE = APPS / "firehose.py"


@pytest.mark.parametrize("path", ["/broadcast", "/send"])
def test_rss_stays_bounded_when_the_peer_stops_reading(path: str) -> None:
    """256 MiB sent at a client that reads nothing: the server's RSS rises by
    about the limits (1 MiB high-water mark, 16 MiB hard limit), not by 256 MiB."""
    server = start_server(FIREHOSE, "--megabytes", "256")
    try:
        client = RawClient(server.port)
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KIB)
        client.send(handshake_request(path))
        assert client.read_response()[0] == 101
        line = _report(server)
        client.close()
    finally:
        server.stop()
    fields = dict(item.split("=") for item in line.split()[1:])
    assert fields["path"] == path
    assert int(fields["rss_growth_kib"]) < 40 * 1024, line
    if path == "/broadcast":
        assert fields["code"] == "1008", line  # closed at max_buffered_amount
    else:
        assert fields["timeouts"] == "1", line  # send() waited, then gave up
        assert int(fields["sent"]) < 100, line


def test_without_the_limit_rss_grows_with_what_is_sent() -> None:
    """The control for the test above: with ``max_buffered_amount=None`` the
    same client makes the server hold what it cannot send."""
    server = start_server(
        FIREHOSE, "--megabytes", "128", "--no-limit"
    )
    try:
        client = RawClient(server.port)
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KIB)
        client.send(handshake_request("/broadcast"))
        assert client.read_response()[0] == 101
        assert server.process.stdout is not None
        # It never finishes on its own: read its peak once the client hangs up.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _rss_kib(server.process.pid) < 100 * 1024:
            time.sleep(0.05)
        assert _rss_kib(server.process.pid) >= 100 * 1024
        client.close()
    finally:
        server.stop()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * 4


def _report(server: Any, timeout: float = 60) -> str:
    stdout = server.process.stdout
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stdout.readline().decode()
        if not line:
            break
        if line.startswith("done "):
            return str(line.strip())
    raise AssertionError("the firehose server reported nothing")
