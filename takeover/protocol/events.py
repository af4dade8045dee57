"""What :class:`~takeover.protocol.connection.Connection` reports: small immutable events.

``receive_data`` returns :class:`Message`, :class:`Ping`, :class:`Pong`,
:class:`Close` and :class:`Failure`; ``receive_eof`` returns
:class:`ConnectionLost`. :data:`Event` is any of them.
"""

from __future__ import annotations

from typing import NamedTuple

from takeover.protocol.errors import FailureKind
from takeover.protocol.frames import CloseCode

__all__ = ["Close", "ConnectionLost", "Event", "Failure", "Message", "Ping", "Pong"]


class Message(NamedTuple):
    """A complete data message: ``str`` for text, ``bytes`` for binary."""

    data: str | bytes


class Ping(NamedTuple):
    """A ping was received; the pong is already queued (§5.5.2)."""

    payload: bytes


class Pong(NamedTuple):
    """A pong was received (§5.5.3)."""

    payload: bytes


class Close(NamedTuple):
    """The peer's close frame: ``code`` is 1005 when it carried none (§7.1.5)."""

    code: int
    reason: str


class Failure(NamedTuple):
    """We failed the connection (§7.1.7) with ``code``; ``cause`` is for logs.

    ``kind`` names the fault stably (:class:`FailureKind`, ``ws``-style
    ``"WS_ERR_..."``), for code that must tell faults apart.
    """

    code: int
    reason: str
    cause: BaseException | None
    kind: FailureKind = FailureKind.PROTOCOL_ERROR


class ConnectionLost(NamedTuple):
    """The peer's TCP stream ended before its close frame (from :meth:`Connection.receive_eof`).

    §7.1.5: the close code is then 1006, and §7.1.4: the close was not
    clean; ``code``, ``reason`` and ``was_clean`` are the DOM's ``CloseEvent``
    fields. ``close_sent`` says whether our close frame had been sent: the
    peer hung up instead of answering it (browsers fire no ``error`` then),
    rather than vanishing in the middle of the connection.
    """

    code: int = CloseCode.ABNORMAL
    reason: str = ""
    was_clean: bool = False
    close_sent: bool = False


Event = Message | Ping | Pong | Close | Failure | ConnectionLost
