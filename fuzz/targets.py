"""Fuzz targets for the sans-I/O core, shared by the atheris harness and the corpus replay test.

Each target takes raw bytes and must not raise: the frame parser turns any
input into events or an RFC close code, the handshake validator into a
Handshake or a HandshakeError with an RFC status.
"""

from __future__ import annotations

from takeover.errors import HandshakeError
from takeover.protocol.connection import Connection, Failure
from takeover.protocol.handshake import validate_request


def frames(data: bytes) -> None:
    """Feed ``data`` to a connection in two pieces cut at the first byte's value."""
    if not data:
        return
    cut = data[0] % (len(data) + 1)
    conn = Connection(max_message_size=1 << 16)
    events = conn.receive_data(data[1:cut]) + conn.receive_data(data[cut:])
    for event in events:
        if isinstance(event, Failure) and event.code == 1011:
            raise AssertionError(f"internal error on fuzz input: {event.cause!r}")
    conn.data_to_send()


def handshake(data: bytes) -> None:
    """Parse ``data`` as a request head and validate it as an upgrade request."""
    text = data.decode("latin-1")
    first, _, rest = text.partition("\r\n")
    method, _, tail = first.partition(" ")
    version = tail.rpartition(" ")[2]
    headers = []
    for line in rest.split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name, value.strip()))
    try:
        validate_request(method, version, headers)
    except HandshakeError as error:
        if error.status not in (400, 405, 426):
            raise AssertionError(f"unexpected status {error.status}") from error


TARGETS = {"frames": frames, "handshake": handshake}
