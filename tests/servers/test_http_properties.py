"""Property-based tests of takeover's server with arbitrary request heads, over real sockets.

tests/protocol/test_properties.py checks the sans-I/O core; this sends what hypothesis
makes of an upgrade request (headers dropped, duplicated or filled with any
bytes, odd methods, versions and line endings, a head cut anywhere, or just
noise) to a running :class:`takeover.Server` on 127.0.0.1. Whatever arrives,
the server answers with a status a client can act on, or with the WebSocket's
101, or closes the connection; nothing is printed as a traceback; and after all
of it the server still upgrades and echoes a well-behaved client.
"""

from __future__ import annotations

import io
import logging
import os
import re
import socket
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.socket
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.wrappers import Request

from takeover import create_server, upgrade_websocket
from takeover.server import Server
from tests.clients import KEY, assert_echoes

EXAMPLES = int(os.environ.get("TAKEOVER_HYPOTHESIS_EXAMPLES", "150"))
PROFILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
#: What the server may answer with: the upgrade, the app's page, or an RFC 9110 error.
STATUSES = {101, 200, 400, 403, 404, 405, 408, 414, 426, 431}
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")

FIELDS = [
    ("Host", "127.0.0.1"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", KEY),
    ("Sec-WebSocket-Version", "13"),
]
header_bytes = st.binary(max_size=40) | st.sampled_from(
    [b"websocket", b"Upgrade", b"13", b"8", KEY.encode(), b"keep-alive, Upgrade", b"", b" ", b"\xff\xfe"]
)


@st.composite
def request_heads(draw: st.DrawFn) -> bytes:
    """An upgrade request, mutated, or noise."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"CONNECT", b"G\x00T", b""]))
    target = draw(st.sampled_from([b"/", b"/ws", b"*", b"", b"/" + b"a" * 300, b"http://x/"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1", b"", b"XYZ"]))
    fields = [(name.encode(), value.encode()) for name, value in FIELDS]
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["drop", "replace", "duplicate", "add"]))
        index = draw(st.integers(0, len(fields) - 1)) if fields else 0
        if action == "drop" and fields:
            fields.pop(index)
        elif action == "replace" and fields:
            fields[index] = (fields[index][0], draw(header_bytes))
        elif action == "duplicate" and fields:
            fields.append((fields[index][0], draw(header_bytes)))
        else:
            fields.append((draw(st.binary(min_size=1, max_size=12)), draw(header_bytes)))
    newline = draw(st.sampled_from([b"\r\n", b"\n", b"\r"]))
    lines = [b" ".join(part for part in (method, target, version) if part)]
    lines += [name + b": " + value for name, value in fields]
    head = newline.join(lines) + newline + newline
    if draw(st.booleans()):
        head = head[: draw(st.integers(0, len(head)))]  # cut anywhere
    return head


def echo(request: Request, sock: Any, head: bytes) -> None:
    ws, _ = upgrade_websocket(request, socket=sock, head=head, idle_timeout=None)
    ws.onmessage = lambda event: ws.send(event.data)


def page(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


class Problems(logging.Handler):
    """ERROR records of takeover's loggers, and what gevent's hub prints about failed greenlets."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []
        self.hub_output = io.StringIO()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


@pytest.fixture(scope="module")
def problems() -> Iterator[Problems]:
    found = Problems()
    hub = gevent.get_hub()
    stream, hub.exception_stream = hub.exception_stream, found.hub_output
    takeover_logger = logging.getLogger("takeover")
    takeover_logger.addHandler(found)
    yield found
    takeover_logger.removeHandler(found)
    hub.exception_stream = stream


@pytest.fixture(scope="module")
def server(problems: Problems) -> Iterator[Server]:
    srv = create_server(page, header_timeout=2, max_header_size=1024)
    srv.on("upgrade", echo)
    srv.listen(0)
    yield srv
    srv.close(timeout=1)


def answer(port: int, head: bytes) -> bytes:
    """Send ``head`` and end the request (FIN); everything the server writes until it closes."""
    client = gevent.socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        try:
            client.sendall(head)
            client.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered and closed before taking it all
        received = b""
        for _ in range(100):  # bounded: a reply is a few hundred bytes
            try:
                chunk = client.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        return received
    finally:
        client.close()


@PROFILE
@given(head=request_heads())
def test_any_request_head_gets_an_answer_or_a_close(
    server: Server, problems: Problems, head: bytes
) -> None:
    received = answer(server.address[1], head)
    if received:
        match = STATUS_LINE.match(received)
        assert match is not None, received[:200]
        assert int(match.group(1)) in STATUSES, received[:200]
    gevent.idle()  # let the connection's handler finish
    assert problems.records == [], head
    assert problems.hub_output.getvalue() == "", head


def test_the_server_still_serves_after_all_of_it(server: Server, problems: Problems) -> None:
    # Runs after the property above (same module-scoped server).
    assert_echoes(server.address[1], connect=gevent.socket.create_connection)
    assert problems.records == [] and problems.hub_output.getvalue() == ""
