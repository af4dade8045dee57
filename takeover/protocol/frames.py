"""RFC 6455 §5 frame constants and the server's frame serialiser.

Servers send unmasked frames (§5.1); the parser for masked client frames lives
in :mod:`takeover.protocol.connection` beside the state it feeds.
"""

from __future__ import annotations

import struct

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "RSV1",
    "CloseCode",
    "encode_close",
    "encode_frame",
    "is_sendable_close_code",
    "is_valid_close_code",
]

# RFC 6455 §5.2 opcodes.
OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

FIN = 0x80
RSV1 = 0x40  # "Per-Message Compressed" with permessage-deflate (RFC 7692 §6)
MAX_CONTROL_PAYLOAD = 125  # §5.5: "All control frames MUST have a payload length of 125 bytes or less"
MAX_CLOSE_REASON = 123  # 125 minus the 2-byte status code


class CloseCode:
    """RFC 6455 §7.4.1 status codes (plus 1012–1014 from the IANA registry)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # never sent: reported when a close frame has no code
    ABNORMAL = 1006  # never sent: reported when the TCP connection ends without a close
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014


# Codes an endpoint may put in a close frame (§7.4.1, §7.4.2): 1005, 1006 and
# 1015 are reserved for reporting, 1004 is reserved, 1016–2999 are unassigned.
_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a received close frame (§7.4)."""
    return code in _SENDABLE or 3000 <= code <= 4999


def is_sendable_close_code(code: int) -> bool:
    """Whether an application may send ``code`` (the same set as a peer may)."""
    return is_valid_close_code(code)


_pack_short = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack


def encode_frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    """Serialise one unmasked server frame (§5.2) with the minimal length encoding."""
    first = (FIN if fin else 0) | rsv | opcode
    length = len(payload)
    if length < 126:
        return bytes((first, length)) + payload
    if length < 65536:
        return _pack_short(first, 126, length) + payload
    return _pack_long(first, 127, length) + payload


def encode_close(code: int | None = None, reason: str = "") -> bytes:
    """The payload of a close frame (§5.5.1): empty, or a code and UTF-8 reason."""
    if code is None:
        return b""
    return code.to_bytes(2, "big") + reason.encode("utf-8")
