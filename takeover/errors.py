"""Exceptions raised by takeover's public API.

Each error says what went wrong and, where there is one, what to do about it.
:class:`HandshakeError` also carries the HTTP answer to give the client, in the
manner of h11's ``error_status_hint``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ConnectionClosed", "HandshakeError", "InvalidStateError"]


class HandshakeError(ValueError):
    """The request cannot be upgraded to a WebSocket.

    Raised before anything is written to the client. ``status`` and
    ``headers`` are the HTTP response to send instead (RFC 6455 §4.2.2 and
    §4.4): 400 for a malformed request, 405 for a method other than GET, 426
    with ``Sec-WebSocket-Version: 13`` for an unsupported version, 403 for an
    ``Origin`` that ``allowed_origins`` refuses (§10.2). Listeners
    may raise it with any status to refuse an upgrade (``ws``'s abortHandshake).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers: list[tuple[str, str]] = list(headers)


class InvalidStateError(RuntimeError):
    """The WebSocket is not in a state that allows the operation.

    The name and meaning follow the DOM's ``InvalidStateError``: for example
    :meth:`takeover.WebSocket.send` before the connection is open, or a second
    upgrade of a socket that is already a WebSocket.
    """


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
