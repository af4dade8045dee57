"""The closing machine of the core (RFC 6455 §7), driven with bytes alone.

Each path through the closing handshake is fed to a
:class:`~takeover.protocol.connection.Connection` as bytes and EOFs, and
checked through what the I/O layer acts on: the events, ``data_to_send()``,
``close_expected()``, ``eof_to_send``, ``ready_state`` and
``connection_state``. Frames come in odd-sized pieces where that matters
(h11's tests read with ``recv(10)`` "to make things more challenging").
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from takeover.errors import InvalidStateError
from takeover.protocol.connection import (
    _TRANSITIONS,
    Close,
    Connection,
    ConnectionLost,
    ConnectionState,
    Event,
    Failure,
    FailureKind,
    Message,
    Ping,
    State,
)
from takeover.protocol.frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT
from tests.frames import client_frame, server_frames

OPEN = ConnectionState.OPEN
LOCAL_CLOSING = ConnectionState.LOCAL_CLOSING
REMOTE_CLOSING = ConnectionState.REMOTE_CLOSING
FAILING = ConnectionState.FAILING
FAILED = ConnectionState.FAILED
CLOSED = ConnectionState.CLOSED


def close_frame(code: int | None = 1000, reason: bytes = b"") -> bytes:
    return client_frame(OP_CLOSE, b"" if code is None else code.to_bytes(2, "big") + reason)


def pieces(data: bytes, sizes: tuple[int, ...] = (1, 3, 2, 7, 10)) -> Iterator[bytes]:
    """``data`` cut in odd sizes, cycling through ``sizes``."""
    pos, index = 0, 0
    while pos < len(data):
        size = sizes[index % len(sizes)]
        yield data[pos : pos + size]
        pos += size
        index += 1


def feed(conn: Connection, data: bytes) -> list[Event]:
    events: list[Event] = []
    for piece in pieces(data):
        events += conn.receive_data(piece)
    return events


def observed(conn: Connection) -> tuple[ConnectionState, State, bool, bool]:
    """What the I/O layer decides on: the state, readyState, close_expected(), eof_to_send."""
    return conn.connection_state, conn.ready_state, conn.close_expected(), conn.eof_to_send


class TestSection7_1_3PeerClosesFirst:
    """§5.5.1/§7.1.3: the peer's close frame is answered with ours; then §7.1.1: we close TCP."""

    def test_peer_close_then_our_echo(self) -> None:
        conn = Connection()
        assert feed(conn, close_frame(1001, b"bye")) == [Close(1001, "bye")]
        # Our answer is queued, not yet written: the closing handshake is half done.
        assert observed(conn) == (REMOTE_CLOSING, State.CLOSING, False, False)
        assert conn.has_data_to_send
        assert server_frames(conn.data_to_send()) == [(OP_CLOSE, True, b"\x03\xe9")]
        # §7.1.1: the server closes the TCP connection first, nothing more to read.
        assert observed(conn) == (CLOSED, State.CLOSED, False, True)
        assert conn.receive_eof() == []  # the close was reported already

    def test_messages_framed_before_our_echo_is_taken_precede_it(self) -> None:
        # §5.5.1 "after sending a Close frame, the endpoint MUST NOT send any further
        # data frames": until data_to_send() hands the echo out, frames still go before it.
        conn = Connection()
        conn.receive_data(client_frame(OP_TEXT, b"last words") + close_frame())
        assert conn.send_text("reply") == b"\x81\x05reply"
        conn.data_to_send()
        with pytest.raises(InvalidStateError):
            conn.send_text("too late")

    def test_an_empty_close_is_answered_with_an_empty_close(self) -> None:
        conn = Connection()
        assert conn.receive_data(close_frame(None)) == [Close(1005, "")]  # §7.1.5: no code: 1005
        assert conn.data_to_send() == b"\x88\x00"

    def test_eof_before_our_echo_is_written_still_hands_it_out(self) -> None:
        # The peer sent close then FIN: its half is over, ours can still be written.
        conn = Connection()
        conn.receive_data(close_frame())
        assert conn.receive_eof() == []
        assert conn.connection_state is CLOSED and conn.eof_to_send
        assert conn.data_to_send() == b"\x88\x02\x03\xe8"


class TestSection7_1_2WeCloseFirst:
    """§7.1.2: we send a close frame, then wait for the peer's, reading its data meanwhile."""

    def test_we_close_then_the_peer_answers(self) -> None:
        conn = Connection()
        assert conn.send_close(1000, "done") == b"\x88\x06\x03\xe8done"
        assert observed(conn) == (LOCAL_CLOSING, State.CLOSING, True, False)
        # The peer may still be sending: its data is delivered (§5.5.1).
        assert feed(conn, client_frame(OP_TEXT, b"in flight")) == [Message("in flight")]
        assert conn.close_expected()
        assert feed(conn, close_frame(1000)) == [Close(1000, "")]
        assert conn.data_to_send() == b""  # no second close frame
        assert observed(conn) == (CLOSED, State.CLOSED, False, True)

    def test_we_close_and_the_peer_hangs_up(self) -> None:
        # §7.1.5: no close frame received: 1006, and §7.1.4: not clean.
        conn = Connection()
        conn.send_close(1001)
        assert conn.receive_eof() == [ConnectionLost(1006, "", False, close_sent=True)]
        assert observed(conn) == (CLOSED, State.CLOSED, False, True)

    def test_pings_while_closing_are_still_answered(self) -> None:
        conn = Connection()
        conn.send_close()
        assert feed(conn, client_frame(OP_PING, b"?")) == [Ping(b"?")]
        assert conn.data_to_send() == b"\x8a\x01?"
        assert conn.connection_state is LOCAL_CLOSING

    def test_nothing_may_be_sent_after_our_close(self) -> None:
        conn = Connection()
        conn.send_close()
        with pytest.raises(InvalidStateError, match="CLOSING"):
            conn.send_binary(b"late")
        assert conn.send_close(1000) == b""


class TestSection7_1_7FailTheConnection:
    """§7.1.7: on a violation we queue our close, then read on only to find the peer's."""

    def test_failure_then_the_peers_close_after_skipped_frames(self) -> None:
        conn = Connection()
        (failure,) = conn.receive_data(client_frame(OP_TEXT, b"x", mask=None))
        assert isinstance(failure, Failure) and failure.code == 1002
        # Our close is queued: write it first, and keep reading for the peer's.
        assert observed(conn) == (FAILING, State.CLOSING, True, False)
        assert server_frames(conn.data_to_send())[-1][0] == OP_CLOSE
        # §7.1.7 and §7.1.1: send FIN now, and linger while the peer's close may come.
        assert observed(conn) == (FAILED, State.CLOSING, True, True)
        # Frames of every length form are skipped unparsed, their headers cut anywhere.
        skipped = (
            client_frame(OP_TEXT, b"a" * 5)
            + client_frame(OP_BINARY, b"b" * 300)  # 16-bit length
            + client_frame(OP_BINARY, b"c" * 70_000)  # 64-bit length
            + client_frame(OP_TEXT, b"\xff\xfe", mask=None)  # would be a violation: not parsed
        )
        assert feed(conn, skipped) == []
        assert conn.close_expected()
        assert feed(conn, close_frame(1002)) == []  # its arrival is all that matters now
        assert conn.close_received and conn.close is None
        assert observed(conn) == (CLOSED, State.CLOSED, False, True)

    @pytest.mark.parametrize("size", [1, 2, 3, 5, 9, 11])
    def test_the_peers_close_is_found_in_any_pieces(self, size: int) -> None:
        conn = Connection()
        conn.receive_data(client_frame(OP_CONT, b"no message"))  # §5.4: fails from its header
        conn.data_to_send()
        stream = client_frame(OP_BINARY, b"z" * 200) + client_frame(OP_PING, b"p") + close_frame()
        for start in range(0, len(stream), size):
            assert conn.receive_data(stream[start : start + size]) == []
        assert conn.connection_state is CLOSED and conn.close_received

    def test_the_peers_close_in_the_same_read_as_the_violation(self) -> None:
        conn = Connection()
        events = conn.receive_data(client_frame(OP_PING, b"x" * 126, fin=True) + close_frame())
        assert [type(event) for event in events] == [Failure]
        # The rest of the read was kept and searched: the peer's close is there.
        assert conn.close_received
        # Their close arrived while ours was still queued: REMOTE_CLOSING until it is written.
        assert observed(conn) == (REMOTE_CLOSING, State.CLOSING, False, False)
        conn.data_to_send()
        assert observed(conn) == (CLOSED, State.CLOSED, False, True)

    def test_failure_then_eof(self) -> None:
        conn = Connection()
        conn.receive_data(client_frame(OP_TEXT, b"\xff"))
        conn.data_to_send()
        # The Failure was the end of the connection already: EOF adds no event.
        assert conn.receive_eof() == []
        assert observed(conn) == (CLOSED, State.CLOSED, False, True)

    def test_failure_then_eof_before_our_close_was_written(self) -> None:
        conn = Connection()
        conn.receive_data(client_frame(OP_TEXT, b"\xff"))
        assert conn.receive_eof() == []
        assert conn.connection_state is CLOSED
        expected = (OP_CLOSE, True, b"\x03\xefInvalid UTF-8 in text message")
        assert server_frames(conn.data_to_send()) == [expected]

    def test_lost_frame_boundaries_wait_for_eof(self) -> None:
        # A non-minimal length (§5.2) cannot be trusted to find the next frame: nothing
        # after it is parsed, the peer's close cannot be recognised, EOF ends it.
        conn = Connection()
        (failure,) = conn.receive_data(b"\x82\xfe\x00\x05" + b"\x00" * 4 + b"x" * 5 + close_frame())
        assert isinstance(failure, Failure) and failure.kind == FailureKind.NON_MINIMAL_LENGTH
        conn.data_to_send()
        assert feed(conn, close_frame()) == []
        assert conn.close_expected() and not conn.close_received
        assert conn.receive_eof() == []

    def test_failure_while_we_were_closing(self) -> None:
        conn = Connection()
        conn.send_close()
        (failure,) = conn.receive_data(client_frame(OP_TEXT, b"x", mask=None))
        assert isinstance(failure, Failure)
        assert conn.data_to_send() == b""  # our close frame left already: no second one
        assert observed(conn) == (FAILED, State.CLOSING, True, True)


class TestSection7_1_5ClosedWithoutAClose:
    """§7.1.5: the TCP connection closed with no close frame received: 1006, not clean (§7.1.4)."""

    def test_eof_with_no_close(self) -> None:
        conn = Connection()
        assert conn.receive_eof() == [ConnectionLost(1006, "", False, close_sent=False)]
        assert observed(conn) == (CLOSED, State.CLOSED, False, True)
        assert conn.receive_eof() == []  # once

    def test_eof_in_the_middle_of_a_message_drops_it(self) -> None:
        conn = Connection()
        conn.receive_data(client_frame(OP_TEXT, b"half", fin=False) + client_frame(OP_CONT, b"a frame")[:5])
        (lost,) = conn.receive_eof()
        assert lost == ConnectionLost()
        assert (lost.code, lost.was_clean) == (1006, False)

    def test_nothing_may_be_sent_after_eof(self) -> None:
        conn = Connection()
        conn.receive_eof()
        with pytest.raises(InvalidStateError, match="CLOSED"):
            conn.send_text("anyone?")
        assert conn.send_close() == b""


class TestSection7_1_1DataAfterTheClose:
    """§7.1.1/§1.4: nothing after the close handshake is processed."""

    @pytest.mark.parametrize(
        "end",
        [
            lambda conn: conn.receive_data(close_frame()),
            lambda conn: (conn.send_close(), conn.receive_data(close_frame())),
            lambda conn: conn.receive_eof(),
        ],
        ids=["peer-closed", "handshake-done", "eof"],
    )
    def test_data_after_close_is_ignored(self, end: object) -> None:
        conn = Connection()
        end(conn)  # type: ignore[operator]
        conn.data_to_send()
        later = client_frame(OP_TEXT, b"ignored") + client_frame(OP_PING, b"no pong") + close_frame(1000)
        assert feed(conn, later) == []
        assert conn.data_to_send() == b""
        assert conn.connection_state is CLOSED


class TestTheMachineIsATable:
    def test_closed_is_final_and_every_state_reaches_it(self) -> None:
        assert {state for state, _ in _TRANSITIONS} == set(ConnectionState) - {CLOSED}
        for state in ConnectionState:
            reached = {state}
            while True:
                more = {after for (before, _), after in _TRANSITIONS.items() if before in reached} - reached
                if not more:
                    break
                reached |= more
            assert CLOSED in reached, state
        # EOF ends every state that is not over yet.
        assert all(_TRANSITIONS[(state, "eof")] is CLOSED for state in set(ConnectionState) - {CLOSED})

    def test_a_pair_not_in_the_table_raises(self) -> None:
        conn = Connection()
        conn.receive_data(close_frame())
        with pytest.raises(RuntimeError, match="No transition from REMOTE_CLOSING on 'fail'"):
            conn._transition("fail")

    def test_ready_state_and_state_are_derived(self) -> None:
        # ready_state is the DOM's; state is the old view, CLOSED once no events will be read.
        conn = Connection()
        assert (conn.ready_state, conn.state) == (State.OPEN, State.OPEN)
        conn.receive_data(close_frame())
        assert (conn.ready_state, conn.state) == (State.CLOSING, State.CLOSED)
        conn.data_to_send()
        assert (conn.ready_state, conn.state) == (State.CLOSED, State.CLOSED)


VIOLATIONS = [
    (client_frame(OP_TEXT, b"x", mask=None), 1002, FailureKind.EXPECTED_MASK),
    (client_frame(OP_TEXT, b"x", rsv=0x40), 1002, FailureKind.UNEXPECTED_RSV_1),
    (client_frame(OP_TEXT, b"x", rsv=0x20), 1002, FailureKind.UNEXPECTED_RSV_2_3),
    (client_frame(0x3, b"x"), 1002, FailureKind.INVALID_OPCODE),
    (client_frame(0xB, b"x"), 1002, FailureKind.INVALID_OPCODE),
    (client_frame(OP_BINARY, b"x", form=16), 1002, FailureKind.NON_MINIMAL_LENGTH),
    (b"\x82\xff" + (1 << 63).to_bytes(8, "big"), 1002, FailureKind.UNSUPPORTED_DATA_PAYLOAD_LENGTH),
    (client_frame(OP_PING, b"x" * 126), 1002, FailureKind.INVALID_CONTROL_PAYLOAD_LENGTH),
    (client_frame(OP_CLOSE, b"\x03"), 1002, FailureKind.INVALID_CONTROL_PAYLOAD_LENGTH),
    (client_frame(OP_PING, b"", fin=False), 1002, FailureKind.EXPECTED_FIN),
    (client_frame(OP_CONT, b"x"), 1002, FailureKind.UNEXPECTED_CONTINUATION),
    (
        client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_TEXT, b"b"),
        1002,
        FailureKind.EXPECTED_CONTINUATION,
    ),
    (client_frame(OP_BINARY, b"x" * 101), 1009, FailureKind.UNSUPPORTED_MESSAGE_LENGTH),
    (close_frame(1005), 1002, FailureKind.INVALID_CLOSE_CODE),
    (close_frame(1000, b"\xff"), 1007, FailureKind.INVALID_UTF8),
    (client_frame(OP_TEXT, b"\xc0\xaf"), 1007, FailureKind.INVALID_UTF8),
]


class TestSection7_4_1FailureKinds:
    @pytest.mark.parametrize(
        ("data", "code", "kind"), VIOLATIONS, ids=[kind.name for _, _, kind in VIOLATIONS]
    )
    def test_each_violation_has_its_code_and_stable_kind(
        self, data: bytes, code: int, kind: FailureKind
    ) -> None:
        (failure,) = Connection(max_message_size=100).receive_data(data)
        assert isinstance(failure, Failure)
        assert (failure.code, failure.kind) == (code, kind)
        assert failure.kind == kind.value and str(failure.kind) == kind.value  # a plain "WS_ERR_..." string
        assert kind.value.startswith("WS_ERR_")

    def test_a_bug_of_ours_is_an_internal_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def boom(self: Connection, header: object, payload: bytes, events: list[Event]) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(Connection, "_on_frame", boom)
        (failure,) = Connection().receive_data(client_frame(OP_TEXT, b"x") * 2)
        assert isinstance(failure, Failure)
        assert (failure.code, failure.kind) == (1011, FailureKind.INTERNAL_ERROR)


SOME_FRAMES = [
    client_frame(OP_TEXT, b"hi"),
    client_frame(OP_BINARY, b"x" * 200),
    client_frame(OP_TEXT, b"frag", fin=False),
    client_frame(OP_CONT, b"ment"),
    client_frame(OP_PING, b"p"),
    close_frame(1000),
    close_frame(None),
    client_frame(OP_TEXT, b"x", mask=None),  # a violation
    client_frame(OP_TEXT, b"\xff"),  # invalid UTF-8
]
OPERATIONS = st.one_of(
    st.tuples(st.just("data"), st.sampled_from(SOME_FRAMES), st.integers(1, 12)),
    st.tuples(st.sampled_from(["send_close", "send_text", "data_to_send", "eof"]), st.just(b""), st.just(0)),
)


class TestAnyOrderOfEvents:
    @settings(max_examples=300, deadline=None)
    @given(st.lists(OPERATIONS, max_size=25))
    def test_the_table_covers_every_reachable_pair(self, operations: list[tuple[str, bytes, int]]) -> None:
        # No order of reads, sends, closes and EOF reaches a pair the table lacks (that
        # would be a 1011 or a RuntimeError), and what the I/O layer reads stays consistent.
        conn = Connection()
        for name, data, size in operations:
            if name == "data":
                for piece in pieces(data, (size,)):
                    events = conn.receive_data(piece)
                    assert not any(isinstance(e, Failure) and e.code == 1011 for e in events), events
            elif name == "send_close":
                conn.send_close(1000)
            elif name == "send_text":
                try:
                    conn.send_text("x")
                except InvalidStateError:
                    assert conn.connection_state in (LOCAL_CLOSING, FAILED, CLOSED)
            elif name == "data_to_send":
                conn.data_to_send()
            else:
                conn.receive_eof()
                assert conn.connection_state is CLOSED
            state = conn.connection_state
            assert (conn.ready_state is State.CLOSED) == (state is CLOSED)
            assert conn.close_expected() == (state in (LOCAL_CLOSING, FAILING, FAILED))
            assert conn.eof_to_send == (state in (FAILED, CLOSED))
            if state in (REMOTE_CLOSING, FAILING):
                assert conn.has_data_to_send  # the close frame waiting to be taken
