"""The closing machine of a WebSocket connection (RFC 6455 §7), as data, in the manner of h11's ``_state.py``.

:class:`~takeover.protocol.connection.Connection` decides its state from the
table :data:`TRANSITIONS` here and nowhere else; the rules come first, then
the tables. :class:`State` is the DOM's ``readyState``, read off the table.
"""

from __future__ import annotations

import enum

__all__ = ["LEGACY_STATE", "READY_STATE", "TRANSITIONS", "ConnectionState", "State"]


class State(enum.IntEnum):
    """Connection states, numbered as the DOM's ``readyState``."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


class ConnectionState(enum.Enum):
    """Where the closing handshake (RFC 6455 §7) stands; see the rules below."""

    #: Neither side has sent a close frame.
    OPEN = "OPEN"
    #: We sent our close frame (§7.1.2); the peer's is awaited, and data still arrives.
    LOCAL_CLOSING = "LOCAL_CLOSING"
    #: The peer's close frame arrived (§7.1.3); our answer is queued in data_to_send().
    REMOTE_CLOSING = "REMOTE_CLOSING"
    #: We failed the connection (§7.1.7); our close frame is queued in data_to_send().
    FAILING = "FAILING"
    #: We failed the connection and our close frame has left; frames are skipped until the peer's.
    FAILED = "FAILED"
    #: The close handshake is over, or the peer's TCP stream ended (receive_eof).
    CLOSED = "CLOSED"


# -- the closing machine ---------------------------------------------------------
#
# Rules. Every decision about the state of the connection is made from this table
# and nowhere else: a method that changes the state calls _transition(what), which
# looks (state, what) up and raises if the pair is missing, so an event the table
# does not allow is a bug, not a silent no-op. What is queued and which events are
# reported depend on the state too; the attributes close_sent, close_received, close
# and failure only record what happened, for the API.
#
# What can happen:
#   send_close      the application called send_close(); its frame is returned at once
#   close_received  the peer's close frame was parsed; our answer is queued, unless
#                   we had sent a close already (§5.5.1, §7.1.3)
#   fail            we failed the connection (§7.1.7); our close frame with the code
#                   is queued, unless one was sent already
#   close_taken     data_to_send() handed out our queued close frame
#   eof             receive_eof(): the peer's TCP stream ended
#
# What each state means for the I/O layer:
#   state            receive_data   send_*  close_expected()  eof_to_send  ready_state
#   OPEN             parses         yes     no                no           OPEN
#   LOCAL_CLOSING    parses         no      yes               no           CLOSING
#   REMOTE_CLOSING   ignores        yes*    no                no           CLOSING
#   FAILING          skips          yes*    yes               no           CLOSING
#   FAILED           skips          no      yes               yes (FIN)    CLOSING
#   CLOSED           ignores        no      no                yes          CLOSED
# * frames taken before our queued close frame precede it on the wire (§5.5.1:
#   nothing after a close), which Autobahn 3.2 relies on.
# "skips": whole frames are passed over, unparsed, until the peer's close (§7.1.7).
# eof_to_send: §7.1.1, the server closes the TCP connection first once the close
# handshake is over; after a failure it sends FIN and may read on, while
# close_expected(), so that the peer reads our close frame rather than a reset.
_OPEN = ConnectionState.OPEN
_LOCAL_CLOSING = ConnectionState.LOCAL_CLOSING
_REMOTE_CLOSING = ConnectionState.REMOTE_CLOSING
_FAILING = ConnectionState.FAILING
_FAILED = ConnectionState.FAILED
_CLOSED = ConnectionState.CLOSED

TRANSITIONS: dict[tuple[ConnectionState, str], ConnectionState] = {
    (_OPEN, "send_close"): _LOCAL_CLOSING,
    (_OPEN, "close_received"): _REMOTE_CLOSING,
    (_OPEN, "fail"): _FAILING,
    (_OPEN, "eof"): _CLOSED,
    (_LOCAL_CLOSING, "close_received"): _CLOSED,
    (_LOCAL_CLOSING, "fail"): _FAILED,  # our close frame has left already
    (_LOCAL_CLOSING, "eof"): _CLOSED,  # the peer hung up instead of answering
    (_REMOTE_CLOSING, "close_taken"): _CLOSED,
    (_REMOTE_CLOSING, "eof"): _CLOSED,  # our answer can still be written: FIN is one way
    (_FAILING, "close_taken"): _FAILED,
    (_FAILING, "close_received"): _REMOTE_CLOSING,  # their close, while ours is still queued
    (_FAILING, "eof"): _CLOSED,
    (_FAILED, "close_received"): _CLOSED,
    (_FAILED, "eof"): _CLOSED,
}

# The states read off the table above.
READY_STATE = {
    _OPEN: State.OPEN,
    _LOCAL_CLOSING: State.CLOSING,
    _REMOTE_CLOSING: State.CLOSING,
    _FAILING: State.CLOSING,
    _FAILED: State.CLOSING,
    _CLOSED: State.CLOSED,
}
# Connection.state, as it always was: CLOSED once no more events will be read.
LEGACY_STATE = {
    **READY_STATE, _REMOTE_CLOSING: State.CLOSED, _FAILING: State.CLOSED, _FAILED: State.CLOSED
}
