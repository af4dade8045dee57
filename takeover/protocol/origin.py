"""Which origins may open a WebSocket: the ``Origin`` check of the handshake, without I/O.

A browser sends ``Origin`` with every WebSocket handshake (RFC 6455 §4.1, item
8 of the client's requirements): the ASCII serialisation of the origin of the
page whose script opened the connection. Browsers let a page of any site open
a WebSocket to any host, with that host's cookies (those SameSite does not hold
back), and CORS does not apply to WebSockets: ``Origin`` is how a server tells
its own pages from someone else's (cross-site WebSocket hijacking). RFC 6455
§10.2 asks a server that serves only some sites to check it and to answer the
others with 403, which :meth:`OriginPolicy.check` does.

:func:`origin_policy` turns ``allowed_origins`` (a list of origins or a
function) into an :class:`OriginPolicy`, checking it as it goes;
:func:`normalize_origin` is the comparison both sides go through.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from takeover.protocol.errors import HandshakeError

__all__ = [
    "DEFAULT_PORTS",
    "AllowedOrigins",
    "OriginCheck",
    "OriginPolicy",
    "normalize_origin",
    "origin_policy",
]

#: A function that decides from a request's ``Origin`` value (None when there is none).
OriginCheck = Callable[[str | None], bool]
#: What ``allowed_origins`` accepts: exact origins, a function, or None for no check.
AllowedOrigins = Iterable[str] | OriginCheck | None

#: The default port of each scheme, left out of a serialised origin (RFC 6454 §6.2
#: step 5). ``ws``/``wss`` have the defaults of RFC 6455 §3.
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

# RFC 6454 §7.1: serialized-origin = scheme "://" host [ ":" port ], with RFC 3986's
# scheme (§3.1), host (§3.2.2: a bracketed IP literal or a name) and port (§3.2.3).
# Names are limited to the ASCII that browsers put in a serialised host.
_ORIGIN = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~]+)"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
# RFC 6454 §7.1: the opaque origin of a privacy-sensitive context, exactly "null".
NULL = "null"
_SHOWN = 200  # characters of a refused Origin value quoted in an error message


def _explain(origin: str) -> str:
    """Why ``origin`` is not ``scheme://host[:port]``, with what to write instead."""
    usage = "an origin is scheme://host[:port], as 'https://app.example.com'"
    if origin.strip() == "*":
        return "'*' is not an origin: leave allowed_origins as None to allow every origin"
    if any(space in origin for space in " \t,"):
        return f"{origin!r} is not an origin: give each origin as an item of its own"
    scheme, separator, rest = origin.partition("://")
    if not separator or not scheme:
        return f"{origin!r} is not an origin: {usage}"
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if not authority.isascii():
        return (
            f"{origin!r} is not an origin: write the host in its ASCII (punycode) form, "
            "as browsers send it"
        )
    if authority != rest:
        bare = f"{scheme}://{authority}"
        hint = f": use {bare!r}" if _ORIGIN.fullmatch(bare) else ""
        return f"{origin!r} is not an origin: an origin has no path, query or fragment{hint}"
    if "@" in authority:
        return f"{origin!r} is not an origin: an origin has no user name or password"
    if not authority:
        return f"{origin!r} is not an origin: it has no host"
    return f"{origin!r} is not an origin: {usage} (the port a number from 0 to 65535)"


def normalize_origin(origin: str) -> str:
    """``origin`` serialised as a browser sends it in ``Origin`` (RFC 6454 §6.2).

    The scheme and host are lower-cased and a default port (80 for ``http``
    and ``ws``, 443 for ``https`` and ``wss``) is dropped, so
    ``"HTTPS://App.Example.com:443"`` becomes ``"https://app.example.com"``.
    ``"null"`` (RFC 6454 §7.1) is returned as it is. Raises :class:`ValueError`
    for anything else that is not ``scheme://host[:port]``: a missing scheme,
    a path (even a lone ``/``), a query, user information, a non-ASCII host.
    """
    if origin == NULL:
        return NULL
    match = _ORIGIN.fullmatch(origin)
    if match is None or int(match["port"] or 0) > 65535:
        raise ValueError(_explain(origin))
    scheme = match["scheme"].lower()
    host = match["host"].lower()
    port = match["port"]
    if port is not None and int(port) != DEFAULT_PORTS.get(scheme):
        host = f"{host}:{int(port)}"
    return f"{scheme}://{host}"


def _shown(origin: str) -> str:
    if len(origin) > _SHOWN:
        return repr(origin[:_SHOWN]) + "..."
    return repr(origin)


@dataclass(frozen=True)
class OriginPolicy:
    """The origins allowed to open a WebSocket; build one with :func:`origin_policy`.

    Either ``origins``, serialised with :func:`normalize_origin`, or
    ``function``, which decides alone. Calling the policy is :meth:`allows`,
    so it can be passed wherever ``allowed_origins`` is accepted.
    """

    origins: frozenset[str] = frozenset()
    function: OriginCheck | None = None

    def allows(self, origin: str | None) -> bool:
        """Whether a request whose ``Origin`` header is ``origin`` may be upgraded.

        With a list of origins, a request without ``Origin`` (None) is allowed:
        browsers always send it (RFC 6455 §4.1), so such a client is not a
        browser, and the cross-site hijacking this check prevents needs a
        browser's cookies. ``"null"`` is allowed only when listed. A value
        that is not one serialised origin (a malformed one, or several) is
        refused. A function gets the value as it is, None included, and
        decides; what it raises propagates.
        """
        if self.function is not None:
            return bool(self.function(origin))
        if origin is None:
            return True
        try:
            return normalize_origin(origin.strip(" \t")) in self.origins
        except ValueError:
            return False

    __call__ = allows

    def check(self, origin: str | None) -> None:
        """Raise :class:`HandshakeError` with status 403 unless :meth:`allows` ``origin``.

        RFC 6455 §4.2.2 (item 4) and §10.2: a server that does not accept a
        connection from an origin answers the handshake with 403 Forbidden.
        """
        if self.allows(origin):
            return
        if origin is None:
            message = "A WebSocket request without an Origin header is not allowed here"
        else:
            message = f"Origin {_shown(origin)} is not allowed to open a WebSocket here"
        if self.function is not None:
            message += ": the allowed_origins function refused it"
        else:
            message += ": add it to allowed_origins to accept WebSockets from its pages"
        raise HandshakeError(message, status=403)


def origin_policy(allowed_origins: AllowedOrigins | OriginPolicy) -> OriginPolicy | None:
    """Check ``allowed_origins`` and make it an :class:`OriginPolicy` (None for no check).

    It may be None, a function ``(origin: str | None) -> bool``, an
    :class:`OriginPolicy`, or an iterable of origins such as
    ``["https://app.example.com", "http://localhost:8000"]`` (see
    :func:`normalize_origin`). Raises :class:`TypeError` for a single string
    (``allowed_origins="https://x"``: pass a list) or a non-string item, and
    :class:`ValueError` for an item that is not an origin.
    """
    if allowed_origins is None or isinstance(allowed_origins, OriginPolicy):
        return allowed_origins
    if isinstance(allowed_origins, str):
        raise TypeError(
            "allowed_origins must be a list of origins or a function, not a single string: "
            f"write allowed_origins=[{allowed_origins!r}]"
        )
    if isinstance(allowed_origins, (bytes, bytearray)):
        raise TypeError("allowed_origins must be a list of origin strings or a function, not bytes")
    if callable(allowed_origins):
        return OriginPolicy(function=allowed_origins)
    if not isinstance(allowed_origins, Iterable):
        raise TypeError(
            "allowed_origins must be None, a list of origins or a function (origin) -> bool, "
            f"not {type(allowed_origins).__name__}"
        )
    origins = set()
    for origin in allowed_origins:
        if not isinstance(origin, str):
            raise TypeError(
                f"allowed_origins must hold origin strings, not {type(origin).__name__} ({origin!r})"
            )
        try:
            origins.add(normalize_origin(origin))
        except ValueError as error:
            raise ValueError(f"Invalid origin in allowed_origins: {error}") from None
    return OriginPolicy(origins=frozenset(origins))
