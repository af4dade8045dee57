"""The exceptions of the sans-I/O core, which imports nothing from takeover above it.

:class:`HandshakeError` is raised by the handshake checks and carries the HTTP
answer to give. :class:`ProtocolViolation` is what the frame parser raises when
the peer breaks RFC 6455 (or RFC 7692);
:class:`~takeover.protocol.connection.Connection` never lets it reach its
caller: it fails the connection with the violation's ``code`` (§7.1.7) and
reports it as the ``cause`` of a ``Failure`` event, whose ``kind`` is one of
the stable :class:`FailureKind` names. :class:`InvalidStateError` is raised at
the application, for a send after the close. :mod:`takeover.errors` re-exports
them with the rest of takeover's public exceptions.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

__all__ = ["FailureKind", "HandshakeError", "InvalidStateError", "ProtocolViolation"]


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


class FailureKind(str, enum.Enum):
    """Why a connection failed, as a stable name to match on (the reason text may change).

    In the manner of ``ws``'s ``WS_ERR_*`` codes, with ``ws``'s name where it
    has one for the same fault. Each is a ``str``: ``kind == "WS_ERR_INVALID_UTF8"``.
    """

    __str__ = str.__str__  # the name itself, not "FailureKind.X"

    #: §5.1: a client frame without the mask bit.
    EXPECTED_MASK = "WS_ERR_EXPECTED_MASK"
    #: §5.2: RSV1 without a negotiated extension, or on a control or continuation frame (RFC 7692 §6.1).
    UNEXPECTED_RSV_1 = "WS_ERR_UNEXPECTED_RSV_1"
    #: §5.2: RSV2 or RSV3 set (no extension defines them).
    UNEXPECTED_RSV_2_3 = "WS_ERR_UNEXPECTED_RSV_2_3"
    #: §5.2: a reserved opcode.
    INVALID_OPCODE = "WS_ERR_INVALID_OPCODE"
    #: §5.2: a 16- or 64-bit length that fits a shorter form.
    NON_MINIMAL_LENGTH = "WS_ERR_NON_MINIMAL_LENGTH"
    #: §5.2: a 64-bit length with its most significant bit set.
    UNSUPPORTED_DATA_PAYLOAD_LENGTH = "WS_ERR_UNSUPPORTED_DATA_PAYLOAD_LENGTH"
    #: §5.5, §5.5.1: a control frame over 125 bytes, or a close frame of 1 byte.
    INVALID_CONTROL_PAYLOAD_LENGTH = "WS_ERR_INVALID_CONTROL_PAYLOAD_LENGTH"
    #: §5.5: a fragmented control frame.
    EXPECTED_FIN = "WS_ERR_EXPECTED_FIN"
    #: §5.4: a continuation frame with no message to continue.
    UNEXPECTED_CONTINUATION = "WS_ERR_UNEXPECTED_CONTINUATION"
    #: §5.4: a new text or binary frame before the fragmented message ended.
    EXPECTED_CONTINUATION = "WS_ERR_EXPECTED_CONTINUATION"
    #: §10.4: a message (or its inflated output) over ``max_message_size``; 1009.
    UNSUPPORTED_MESSAGE_LENGTH = "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH"
    #: §7.4: a close code an endpoint may not send.
    INVALID_CLOSE_CODE = "WS_ERR_INVALID_CLOSE_CODE"
    #: §8.1: invalid UTF-8 in a text message or a close reason; 1007.
    INVALID_UTF8 = "WS_ERR_INVALID_UTF8"
    #: RFC 7692 §7.2.2: a compressed message that is not valid DEFLATE data; 1007.
    INVALID_COMPRESSED_DATA = "WS_ERR_INVALID_COMPRESSED_DATA"
    #: Any other protocol error (a ProtocolViolation raised without a kind).
    PROTOCOL_ERROR = "WS_ERR_PROTOCOL_ERROR"
    #: A bug of ours, closed with 1011 and no details (§7.4.1).
    INTERNAL_ERROR = "WS_ERR_INTERNAL_ERROR"


class ProtocolViolation(Exception):
    """The peer broke the protocol; the connection fails with ``code`` (RFC 6455 §7.1.7).

    ``code`` is the close code to send (1002, 1007 for invalid data, 1009 for
    a message over the limit, §7.4.1), ``reason`` the close reason, which says
    what was wrong, and ``kind`` its stable :class:`FailureKind`.
    """

    def __init__(self, code: int, reason: str, kind: FailureKind = FailureKind.PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.kind = kind
