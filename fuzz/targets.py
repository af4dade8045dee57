"""Fuzz targets for the sans-I/O core, shared by the atheris harness and the corpus replay test.

Each target takes raw bytes and must not raise: the frame parser turns any
input into events or an RFC close code (also with permessage-deflate, where
the inflater meets the input), the handshake validator into a Handshake or a
HandshakeError with an RFC status, and extension negotiation into an agreement,
none, or a 400.
"""

from __future__ import annotations

from takeover.errors import HandshakeError
from takeover.protocol.connection import Connection, Failure
from takeover.protocol.deflate import DeflateOptions, DeflateParameters, PerMessageDeflate, negotiate
from takeover.protocol.handshake import extension_offers, validate_request


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


def deflate(data: bytes) -> None:
    """Like ``frames``, on a connection that negotiated permessage-deflate.

    The second byte picks the agreement (context takeover or not, window bits),
    so that the inflater runs on whatever follows.
    """
    if len(data) < 2:
        return
    cut = data[0] % (len(data) + 1)
    choice = data[1]
    params = DeflateParameters(
        server_no_context_takeover=bool(choice & 1),
        client_no_context_takeover=bool(choice & 2),
        server_max_window_bits=8 + (choice >> 2) % 8,
        client_max_window_bits=8 + (choice >> 5) % 8,
    )
    conn = Connection(max_message_size=1 << 16, extension=PerMessageDeflate(params))
    events = conn.receive_data(data[2:cut]) + conn.receive_data(data[max(cut, 2) :])
    for event in events:
        if isinstance(event, Failure) and event.code not in (1002, 1007, 1009):
            raise AssertionError(f"unexpected failure on fuzz input: {event!r}")
    conn.data_to_send()


def extensions(data: bytes) -> None:
    """Negotiate permessage-deflate from ``data`` as a Sec-WebSocket-Extensions value."""
    offers = extension_offers(data.decode("latin-1").split("\r\n"))
    try:
        chosen = negotiate(offers, DeflateOptions(client_max_window_bits=10))
    except HandshakeError as error:
        if error.status != 400:
            raise AssertionError(f"unexpected status {error.status}") from error
        return
    if chosen is not None:
        chosen.compress(b"fuzz")


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


TARGETS = {"frames": frames, "handshake": handshake, "deflate": deflate, "extensions": extensions}
