"""The exceptions of the sans-I/O core, which imports nothing from takeover above it.

:class:`ProtocolViolation` is what the frame parser raises when the peer breaks
RFC 6455 (or RFC 7692); :class:`~takeover.protocol.connection.Connection`
never lets it reach its caller: it fails the connection with the violation's
``code`` (§7.1.7) and reports it as the ``cause`` of a ``Failure`` event.
"""

from __future__ import annotations

__all__ = ["ProtocolViolation"]


class ProtocolViolation(Exception):
    """The peer broke the protocol; the connection fails with ``code`` (RFC 6455 §7.1.7).

    ``code`` is the close code to send (1002 by default, 1007 for invalid
    data, 1009 for a message over the limit, §7.4.1) and ``reason`` the close
    reason, which says what was wrong.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
