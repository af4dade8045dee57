"""Exceptions raised by takeover's public API: every one of them is importable from here.

Each error says what went wrong and, where there is one, what to do about it.
:class:`HandshakeError` also carries the HTTP answer to give the client, in the
manner of h11's ``error_status_hint``. The sans-I/O core's own exceptions
(:class:`HandshakeError`, :class:`InvalidStateError`,
:class:`ProtocolViolation`) live in :mod:`takeover.protocol.errors`, which
imports nothing above the core; they are the same classes here.
"""

from __future__ import annotations

from takeover.protocol.errors import HandshakeError, InvalidStateError, ProtocolViolation

__all__ = [
    "ClientError",
    "ConnectionClosed",
    "HandshakeError",
    "InvalidStateError",
    "ProtocolViolation",
    "UnsupportedServerError",
]


class ConnectionClosed(Exception):
    """The WebSocket is closed; raised by the blocking API after the close.

    ``code`` and ``reason`` are those of the close (1005 when the peer's close
    frame had no code, 1006 when the connection ended without a close frame).
    """

    def __init__(self, code: int, reason: str = "", was_clean: bool = True) -> None:
        self.code = code
        self.reason = reason
        self.was_clean = was_clean
        detail = f"WebSocket closed with code {code}"
        if reason:
            detail += f" ({reason})"
        super().__init__(detail)


class ClientError(Exception):
    """A request the server could not read, as node:http's ``clientError`` reports it.

    ``status`` is the HTTP answer (400, 408, 431); ``code`` is Node's error
    code (``HPE_HEADER_OVERFLOW``, ``ERR_HTTP_REQUEST_TIMEOUT``, ``HPE_INVALID``).
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class UnsupportedServerError(RuntimeError):
    """The WSGI server gives no access to the connection, so it cannot be taken over."""
