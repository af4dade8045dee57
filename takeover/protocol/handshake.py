"""The server side of the RFC 6455 opening handshake, without I/O.

:func:`is_upgrade_request` says whether a request asks to switch protocols at
all (RFC 9110 §7.8); :func:`validate_request` checks an upgrade request from
its method, HTTP version and headers (RFC 6455 §4.2.1) and raises
:class:`HandshakeError` with the HTTP answer to give; :func:`accept_response`
renders the 101, and :func:`rejection` is the one renderer of a refusal, as
(status line, headers, body) for a WSGI server and as raw bytes for a socket.
Error messages are Deno's where Deno has one (``Deno.upgradeWebSocket``), so
code ported from Deno sees the same text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import NamedTuple

from takeover.protocol.errors import HandshakeError

__all__ = [
    "ExtensionOffer",
    "Handshake",
    "HandshakeError",
    "Rejection",
    "accept_key",
    "accept_response",
    "extension_offers",
    "header_tokens",
    "is_upgrade_request",
    "parse_extension",
    "reject_response",
    "rejection",
    "rejection_for",
    "select_protocol",
    "validate_request",
]

# RFC 6455 §1.3: the GUID appended to the client's key.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUPPORTED_VERSION = "13"

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


@dataclass(frozen=True)
class Handshake:
    """A valid upgrade request, reduced to what the 101 response needs.

    ``extensions`` holds the text of each extension offer of
    ``Sec-WebSocket-Extensions`` in order, as ``"permessage-deflate;
    client_max_window_bits"``; :func:`parse_extension` reads one.
    """

    key: str
    protocols: tuple[str, ...]
    extensions: tuple[str, ...]


def header_tokens(value: str) -> list[str]:
    """Split a comma-separated header value (RFC 9110 §5.6.1) into its tokens."""
    return [token.strip() for token in value.split(",") if token.strip()]


def _lists(value: str, token: str) -> bool:
    """Whether the comma-separated ``value`` lists ``token`` (lower-case), in any case."""
    if value.lower() == token:  # the usual, exact value
        return True
    return token in (t.lower() for t in header_tokens(value))


def is_upgrade_request(upgrade: str | None, connection: str | None, protocol: str | None = None) -> bool:
    """Whether a request asks to switch protocols: an ``Upgrade`` header listed in ``Connection``.

    RFC 9110 §7.8: a client asks for an upgrade with an ``Upgrade`` header
    and the ``upgrade`` connection option. ``upgrade`` and ``connection`` are
    the two headers' values (repeated headers joined with commas, as a WSGI
    environ's ``HTTP_UPGRADE`` and ``HTTP_CONNECTION`` hold them), None when
    absent. With ``protocol`` (``"websocket"``), only a request that offers
    that protocol counts (RFC 6455 §4.2.1: compared case-insensitively).
    Whether the upgrade is valid is :func:`validate_request`'s question.
    """
    if upgrade is None or not connection or not _lists(connection, "upgrade"):
        return False
    return protocol is None or _lists(upgrade, protocol.lower())


# RFC 9110 §5.6.2 token and §5.6.4 quoted-string.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_IS_TOKEN = re.compile(_TOKEN).fullmatch
# One list element of Sec-WebSocket-Extensions: anything but commas outside quoted
# strings (a stray quote stays in the element, for parse_extension to refuse).
_ELEMENT = re.compile(r'(?:[^,"]|' + _QUOTED + r'|")+')
# RFC 6455 §9.1: extension-param = token [ "=" (token | quoted-string) ]; whitespace
# around the separators is tolerated.
_PARAM = re.compile(r"[ \t]*;[ \t]*(" + _TOKEN + r")(?:[ \t]*=[ \t]*(" + _TOKEN + "|" + _QUOTED + r"))?")
_QUOTED_PAIR = re.compile(r"\\(.)")


def extension_offers(values: Iterable[str]) -> tuple[str, ...]:
    """Split ``Sec-WebSocket-Extensions`` values into offers, never at a comma inside quotes.

    Empty list elements are dropped (RFC 9110 §5.6.1); the offers are not
    checked here, :func:`parse_extension` does that.
    """
    offers: list[str] = []
    for value in values:
        if '"' not in value:
            offers.extend(header_tokens(value))
            continue
        for match in _ELEMENT.finditer(value):
            offer = match.group().strip()
            if offer:
                offers.append(offer)
    return tuple(offers)


class ExtensionOffer(NamedTuple):
    """One extension of ``Sec-WebSocket-Extensions``: its name and its parameters in order.

    A parameter without a value has the value ``None``; a quoted value is unquoted.
    """

    name: str
    params: tuple[tuple[str, str | None], ...]


def parse_extension(text: str) -> ExtensionOffer:
    """Parse one extension offer by the grammar of RFC 6455 §9.1.

    ``extension = token *( ";" extension-param )`` and ``extension-param =
    token [ "=" (token | quoted-string) ]``, where a quoted value must be a
    token once unquoted. Raises :class:`ValueError` for anything else.
    """
    text = text.strip(" \t")
    match = re.match(_TOKEN, text)
    if match is None:
        raise ValueError(f"Invalid extension {text!r}: it must start with an extension name")
    name = match.group()
    params: list[tuple[str, str | None]] = []
    pos = match.end()
    while pos < len(text):
        param = _PARAM.match(text, pos)
        if param is None:
            raise ValueError(f"Invalid extension {text!r}: unexpected {text[pos:]!r}")
        key, value = param.groups()
        if value is not None and value.startswith('"'):
            value = _QUOTED_PAIR.sub(r"\1", value[1:-1])
            if not _IS_TOKEN(value):
                raise ValueError(
                    f"Invalid extension {text!r}: a quoted value must be a token (RFC 6455 §9.1)"
                )
        params.append((key, value))
        pos = param.end()
    return ExtensionOffer(name, tuple(params))


# The only headers the handshake reads.
_NAMES = frozenset(
    {
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
    }
)


def _collect(headers: Headers) -> dict[str, list[str]]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    collected: dict[str, list[str]] = {}
    for name, value in items:
        key = name.lower()
        if key in _NAMES:
            collected.setdefault(key, []).append(value)
    return collected


def _tokens(collected: dict[str, list[str]], name: str) -> list[str]:
    return [token for value in collected.get(name, ()) for token in header_tokens(value)]


def _has_token(collected: dict[str, list[str]], name: str, token: str) -> bool:
    """Whether the comma-separated header ``name`` lists ``token`` (case-insensitive)."""
    return any(_lists(value, token) for value in collected.get(name, ()))


def _http_version_ok(version: str) -> bool:
    # RFC 6455 §4.1: "The method of the request MUST be GET, and the HTTP
    # version MUST be at least 1.1."
    if not version.upper().startswith("HTTP/"):
        return False
    major, _, minor = version[5:].partition(".")
    try:
        return (int(major), int(minor or 0)) >= (1, 1)
    except ValueError:
        return False


def validate_request(method: str, http_version: str, headers: Headers) -> Handshake:
    """Check an upgrade request; return what the 101 needs or raise.

    ``headers`` is a mapping or a sequence of ``(name, value)`` pairs; repeated
    headers are joined as RFC 9110 §5.3 allows. Raises :class:`HandshakeError`
    carrying the status to answer with.
    """
    return validate_collected(method, http_version, _collect(headers))


def validate_collected(method: str, http_version: str, collected: dict[str, list[str]]) -> Handshake:
    """:func:`validate_request` for headers already collected: lower-case name -> values."""
    if method != "GET" and method.upper() != "GET":
        raise HandshakeError(
            f"Invalid method {method!r}: a WebSocket upgrade must be a GET request (RFC 6455 §4.1)",
            status=405,
            headers=[("Allow", "GET")],
        )
    if http_version != "HTTP/1.1" and not _http_version_ok(http_version):
        raise HandshakeError(
            f"Invalid HTTP version {http_version!r}: a WebSocket upgrade needs HTTP/1.1 or later"
            " (RFC 6455 §4.1)"
        )
    if not _has_token(collected, "upgrade", "websocket"):
        raise HandshakeError("Invalid Header: 'upgrade' header must contain 'websocket'")
    if not _has_token(collected, "connection", "upgrade"):
        raise HandshakeError("Invalid Header: 'connection' header must contain 'Upgrade'")
    keys = collected.get("sec-websocket-key")
    if not keys:
        raise HandshakeError("Invalid Header: 'sec-websocket-key' header must be set")
    key = keys[0].strip()
    if len(keys) != 1 or not _key_ok(key):
        raise HandshakeError(
            "Invalid Header: 'sec-websocket-key' must be the base64 encoding of 16 bytes"
            " (RFC 6455 §4.1)"
        )
    versions = collected.get("sec-websocket-version")
    if not versions:
        raise HandshakeError(
            "Invalid Header: 'sec-websocket-version' header must be set",
            headers=[("Sec-WebSocket-Version", SUPPORTED_VERSION)],
        )
    if [v.strip() for v in versions] != [SUPPORTED_VERSION]:
        raise HandshakeError(
            f"Unsupported WebSocket version {', '.join(versions)!r}: this server speaks version 13"
            " (RFC 6455 §4.4)",
            status=426,
            headers=[("Sec-WebSocket-Version", SUPPORTED_VERSION)],
        )
    return Handshake(
        key=key,
        protocols=tuple(_tokens(collected, "sec-websocket-protocol")),
        extensions=extension_offers(collected.get("sec-websocket-extensions", ())),
    )


def _key_ok(key: str) -> bool:
    # RFC 6455 §4.1: a randomly selected 16-byte value, base64-encoded.
    if len(key) != 24:
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def select_protocol(handshake: Handshake, protocol: str | None) -> str | None:
    """Check that ``protocol`` (the server's choice) was offered by the client.

    As in Deno, no ``Sec-WebSocket-Protocol`` is answered unless the server
    names one, and naming one the client did not offer is an error.
    """
    if protocol is None:
        return None
    if protocol not in handshake.protocols:
        raise HandshakeError(f"Protocol '{protocol}' not in the request's protocol list (non negotiable)")
    return protocol


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for ``key`` (RFC 6455 §4.2.2 step 5.4)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def accept_headers(
    handshake: Handshake, protocol: str | None = None, extensions: str | None = None
) -> list[tuple[str, str]]:
    """The headers of the 101 response, in order."""
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(handshake.key)),
    ]
    if protocol:
        headers.append(("Sec-WebSocket-Protocol", protocol))
    if extensions:
        headers.append(("Sec-WebSocket-Extensions", extensions))
    return headers


def accept_response(headers: Iterable[tuple[str, str]]) -> bytes:
    """Render ``101 Switching Protocols`` with ``headers`` as bytes."""
    lines = ["HTTP/1.1 101 Switching Protocols"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Rejection(NamedTuple):
    """A refused handshake's HTTP answer, rendered once for every way it is sent.

    ``status_line`` is WSGI's (``"426 Upgrade Required"``), ``headers`` are
    the response's, ``Connection: close`` first (the connection ends, as with
    ``ws``'s abortHandshake), and ``body`` is the message as UTF-8 text.
    """

    status_line: str
    headers: list[tuple[str, str]]
    body: bytes

    @classmethod
    def for_error(cls, error: HandshakeError) -> Rejection:
        """The answer that ``error`` carries: its status, message and headers."""
        return rejection(error.status, str(error), error.headers)

    def to_bytes(self) -> bytes:
        """The raw HTTP/1.1 response, for a socket that no server writes to any more."""
        lines = [f"HTTP/1.1 {self.status_line}", *(f"{name}: {value}" for name, value in self.headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body

    @property
    def app_headers(self) -> list[tuple[str, str]]:
        """The headers a WSGI application returns: without ``Connection``, which is
        hop-by-hop (PEP 3333 leaves it to the server), and ``Content-Length``, which
        the framework computes from the body."""
        return [(name, value) for name, value in self.headers if name not in _SERVER_HEADERS]


_SERVER_HEADERS = frozenset({"Connection", "Content-Length"})


def rejection(status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> Rejection:
    """Render the answer to a refused handshake: the one renderer of takeover's refusals."""
    body = message.encode("utf-8")
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return Rejection(
        f"{status} {phrase}",
        [
            ("Connection", "close"),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *headers,
        ],
        body,
    )


def reject_response(
    status: int, message: str, headers: Iterable[tuple[str, str]] = ()
) -> bytes:
    """Render an error response that ends the connection, like ``ws``'s abortHandshake."""
    return rejection(status, message, headers).to_bytes()


def rejection_for(error: HandshakeError) -> bytes:
    """The response bytes for a :class:`HandshakeError`."""
    return Rejection.for_error(error).to_bytes()
