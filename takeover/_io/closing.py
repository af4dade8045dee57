"""The close table: how each reason a WebSocket connection ends closes it (RFC 6455 §7).

:data:`CLOSINGS` has one row per :class:`Reason`: which close frame is sent,
its code and reason text, whether the session ends now or waits for the
peer's answer, how long queued frames may take to flush, whether to linger
for the peer's close, when the events go and what they say. The one routine
that reads it is :meth:`takeover._io.session.Session.close`.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from takeover.protocol.frames import CloseCode

__all__ = ["CLOSINGS", "Closing", "Flush", "Frame", "Reason"]

IDLE_TIMEOUT_REASON = "No response from ping frame."
OVERFLOW_REASON = "Send buffer full: the peer is not reading"
NOT_RETURNED = "Upgrade response was not returned from callback"
INTERNAL_ERROR_REASON = "Internal error"
NO_CLOSE_FRAME = "The connection was closed without a close frame"


class Reason(enum.Enum):
    """Why a connection closes (the rows of :data:`CLOSINGS`)."""

    LOCAL_CLOSE = "local close"  # ws.close()
    SHUTDOWN = "server shutdown"  # the server or worker stops: 1001
    PEER_CLOSE = "peer close"  # the peer's close frame arrived (our echo is queued)
    FAILURE = "protocol failure"  # the peer broke the protocol (§7.1.7)
    OVERFLOW = "overflow"  # more than max_buffered_amount queued: the peer is not reading
    EOF = "end of stream"  # TCP ended without a close frame
    EOF_AFTER_CLOSE = "end of stream after our close"  # we closed, the peer hung up
    IDLE_TIMEOUT = "idle timeout"  # no answer to the keepalive ping
    CLOSE_TIMEOUT = "close timeout"  # no answer to our close frame within close_timeout
    INTERNAL_ERROR = "internal error"  # a bug of ours or of a listener's helper: 1011
    ABANDONED = "abandoned"  # the 101 response was never returned to the server
    UNSUPPORTED_SERVER = "unsupported server"  # the server gives no access to the connection: 501


class Frame(enum.Enum):
    """Which close frame a closing sends."""

    NONE = "none"  # nothing (none is due, or ours is already out)
    QUEUED = "queued"  # the core queued it (our echo of the peer's, or the failure's)
    SEND = "send"  # ours, with the row's code, unless one was sent already
    REPLACE = "replace"  # ours, even if one was queued: an overflow dropped the queue


class Flush(enum.Enum):
    """How long a closing waits for queued frames to be written before closing TCP."""

    NO = "no"
    SHORT = "1 s"
    CLOSE_TIMEOUT = "close_timeout"


class Closing(NamedTuple):
    """One row of :data:`CLOSINGS`."""

    frame: Frame
    #: The code of the close frame sent and of the ``close`` event; None: the peer's or the failure's.
    code: int | None
    #: The reason text; None: the peer's or the failure's.
    text: str | None
    #: False: the close handshake starts, and the session ends later (peer close, EOF, timeout).
    ends: bool
    flush: Flush
    #: Half-close, then read until the peer's close frame, its EOF or close_timeout (§7.1.7).
    linger: bool
    #: Dispatch the events before flushing (an overflowed peer may never read what is queued).
    events_first: bool
    was_clean: bool
    #: The ``error`` event's message: None for none, "" for the close reason.
    error: str | None
    #: Run in a task of its own (the caller may be writing to many sockets: broadcast).
    own_task: bool


_SEND, _QUEUED, _REPLACE, _NO_FRAME = Frame.SEND, Frame.QUEUED, Frame.REPLACE, Frame.NONE
_NO, _SHORT, _LONG = Flush.NO, Flush.SHORT, Flush.CLOSE_TIMEOUT

#: How each reason closes the connection (RFC 6455 §7). Only LOCAL_CLOSE and
#: SHUTDOWN leave the session running (``ends=False``): they send our close frame
#: and the session ends later through PEER_CLOSE, EOF_AFTER_CLOSE or
#: CLOSE_TIMEOUT. Every other row ends it: frame, then flush, then linger, then
#: TCP closed, with the events before the flush (``events_first``) or after it.
CLOSINGS: dict[Reason, Closing] = {
    Reason.LOCAL_CLOSE: Closing(
        _SEND, None, None, ends=False, flush=_NO, linger=False,
        events_first=False, was_clean=False, error=None, own_task=False),
    Reason.SHUTDOWN: Closing(
        _SEND, CloseCode.GOING_AWAY, None, ends=False, flush=_NO, linger=False,
        events_first=False, was_clean=False, error=None, own_task=False),
    # §7.1.1: after the close handshake the server closes the TCP connection first.
    Reason.PEER_CLOSE: Closing(
        _QUEUED, None, None, ends=True, flush=_LONG, linger=False,
        events_first=False, was_clean=True, error=None, own_task=False),
    # §7.1.7: our close frame carries the code; let the peer read it and answer.
    Reason.FAILURE: Closing(
        _QUEUED, None, None, ends=True, flush=_LONG, linger=True,
        events_first=False, was_clean=False, error="", own_task=False),
    # §7.4.1 1008, "a message that violates its policy": a queue that would not stop growing.
    Reason.OVERFLOW: Closing(
        _REPLACE, CloseCode.POLICY_VIOLATION, OVERFLOW_REASON, ends=True, flush=_LONG, linger=False,
        events_first=True, was_clean=False, error="", own_task=True),
    # §7.1.5: 1006, the connection closed without a close frame.
    Reason.EOF: Closing(
        _NO_FRAME, CloseCode.ABNORMAL, "", ends=True, flush=_NO, linger=False,
        events_first=False, was_clean=False, error=NO_CLOSE_FRAME, own_task=False),
    Reason.EOF_AFTER_CLOSE: Closing(
        _NO_FRAME, CloseCode.ABNORMAL, "", ends=True, flush=_NO, linger=False,
        events_first=False, was_clean=False, error=None, own_task=False),
    # Deno's idleTimeout: 1001 with its reason.
    Reason.IDLE_TIMEOUT: Closing(
        _SEND, CloseCode.GOING_AWAY, IDLE_TIMEOUT_REASON, ends=True, flush=_SHORT, linger=False,
        events_first=False, was_clean=False, error="", own_task=False),
    Reason.CLOSE_TIMEOUT: Closing(
        _NO_FRAME, CloseCode.ABNORMAL, "", ends=True, flush=_NO, linger=False,
        events_first=False, was_clean=False, error=None, own_task=False),
    # §7.4.1 1011, without details.
    Reason.INTERNAL_ERROR: Closing(
        _SEND, CloseCode.INTERNAL_ERROR, INTERNAL_ERROR_REASON, ends=True, flush=_SHORT, linger=False,
        events_first=False, was_clean=False, error="", own_task=False),
    # Deno: the upgrade's response must be returned; there is no connection to close.
    Reason.ABANDONED: Closing(
        _NO_FRAME, CloseCode.ABNORMAL, "", ends=True, flush=_NO, linger=False,
        events_first=False, was_clean=False, error=NOT_RETURNED, own_task=False),
    # The server cannot hand the connection over: it answered 501 instead of the 101.
    Reason.UNSUPPORTED_SERVER: Closing(
        _NO_FRAME, CloseCode.ABNORMAL, None, ends=True, flush=_NO, linger=False,
        events_first=False, was_clean=False, error="", own_task=False),
}
