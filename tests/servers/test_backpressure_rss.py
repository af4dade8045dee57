"""Backpressure seen from outside: the RSS of a server run as a process
(tests/servers/apps/firehose.py) that sends at a peer that reads nothing, and
of a gunicorn worker whose echoes a client never reads (issue 19 part 7).

The limits themselves (``buffered_amount``, the high-water mark, 1008 at
``max_buffered_amount``) are tests/io/test_backpressure.py, in-process."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from tests.clients import RawClient, handshake_request
from tests.frames import client_frame
from tests.paths import APPS
from tests.processes import start_server
from tests.servers.test_threaded import plain_get, start_gunicorn

KIB = 1024
MIB = 1024 * KIB
MESSAGE = 64 * KIB
FIREHOSE = APPS / "firehose.py"
#: examples/flask_echo.py's page, which its "/" serves: how it ends.
ECHO_PAGE_END = b"</script>\n"


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


def _small_window(address: tuple[str, int], timeout: float) -> socket.socket:
    """A client socket whose receive buffer is set small before it connects (the window it offers)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * KIB)
    sock.settimeout(timeout)
    sock.connect(address)
    return sock


@pytest.mark.parametrize(
    ("worker", "extra"), [("sync", []), ("gthread", ["--threads", "8"])], ids=["sync", "gthread"]
)
def test_a_client_that_never_reads_its_echoes_does_not_grow_the_worker(worker: str, extra: list[str]) -> None:
    """examples/flask_echo.py on gunicorn: up to 300 MiB of 64 KiB messages sent, no echo read.

    The listener's sends wait above the high-water mark (or the connection
    closes at ``max_buffered_amount``) and the reader pauses, so the client's
    own sends stall: the worker holds about the limits, not what was sent.
    """
    served = start_gunicorn(worker, *extra, app="examples.flask_echo:app")
    try:
        worker_pid = served.worker_pid()
        before = _rss_kib(worker_pid)
        client = RawClient(served.port, timeout=10, connect=_small_window)
        client.send(handshake_request("/ws"))
        assert client.read_response()[0] == 101
        client.sock.settimeout(3)  # a message not sent within 3 s: the client is held back
        frame = client_frame(0x2, bytes(MESSAGE))  # masked once, sent again and again
        sent, ended = 0, "all 300 MiB were sent"
        deadline = time.monotonic() + 40
        for _ in range(300 * MIB // MESSAGE):
            if time.monotonic() > deadline:
                ended = "40 s went by"
                break
            try:
                client.sock.sendall(frame)
            except TimeoutError:
                ended = "a send stalled for 3 s"
                break
            except (BrokenPipeError, ConnectionResetError):
                ended = "the server closed the connection"
                break
            sent += len(frame)
        growth = _rss_kib(worker_pid) - before
        assert growth < 60 * KIB, (
            f"the worker's RSS grew by {growth // KIB} MiB; {sent // MIB} MiB were sent, then {ended}"
        )
        assert plain_get(served.port, ending=ECHO_PAGE_END) < 1.0
        client.close()
    finally:
        served.stop()


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
