"""The sans-I/O connection core (RFC 6455 §5–§8), fed and checked with byte strings only.

Every test runs once per masking implementation: the autouse ``mask_impl``
fixture swaps ``takeover.protocol.connection.apply_mask``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

import takeover.protocol.connection as connection_module
from takeover.errors import InvalidStateError
from takeover.protocol.connection import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Close,
    Connection,
    Event,
    Failure,
    Message,
    Ping,
    Pong,
    State,
)
from takeover.protocol.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    is_valid_close_code,
)
from tests.frames import MASK_IMPLEMENTATIONS, RFC_MASK, client_frame, server_frames


@pytest.fixture(autouse=True, params=MASK_IMPLEMENTATIONS)
def mask_impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Callable[..., bytes]:
    monkeypatch.setattr(connection_module, "apply_mask", request.param)
    return request.param  # type: ignore[no-any-return]


def test_mask_fixture_is_in_effect(mask_impl: Callable[..., bytes]) -> None:
    assert connection_module.apply_mask is mask_impl


# -- helpers ------------------------------------------------------------------


def text(data: str, **kwargs: object) -> bytes:
    return client_frame(OP_TEXT, data.encode("utf-8"), **kwargs)  # type: ignore[arg-type]


def binary(data: bytes, **kwargs: object) -> bytes:
    return client_frame(OP_BINARY, data, **kwargs)  # type: ignore[arg-type]


def close_frame(code: int | None = None, reason: bytes = b"") -> bytes:
    payload = b"" if code is None else code.to_bytes(2, "big") + reason
    return client_frame(OP_CLOSE, payload)


def fail_with(conn: Connection, data: bytes, code: int) -> Failure:
    """Feed ``data``; assert the last event is a Failure with ``code`` and its close frame is queued."""
    events = conn.receive_data(data)
    assert events, "expected a Failure event"
    failure = events[-1]
    assert isinstance(failure, Failure), events
    assert failure.code == code, failure
    assert conn.failure is failure
    assert conn.state is State.CLOSED
    assert all(not isinstance(event, Failure) for event in events[:-1])
    frames = server_frames(conn.data_to_send())
    assert frames[-1] == (OP_CLOSE, True, code.to_bytes(2, "big") + failure.reason.encode("utf-8"))
    return failure


def expected_header(opcode: int, length: int) -> bytes:
    """An unmasked final frame header, built independently of ``encode_frame``."""
    first = bytes((0x80 | opcode,))
    if length <= 125:
        return first + bytes((length,))
    if length <= 0xFFFF:
        return first + b"\x7e" + length.to_bytes(2, "big")
    return first + b"\x7f" + length.to_bytes(8, "big")


# -- §5.2 base framing --------------------------------------------------------


class TestSection5_2BaseFraming:
    @pytest.mark.parametrize(
        ("length", "form", "header_size"),
        [(0, 7, 6), (1, 7, 6), (125, 7, 6), (126, 16, 8), (65535, 16, 8), (65536, 64, 14), (70000, 64, 14)],
    )
    def test_payload_lengths(self, length: int, form: int, header_size: int) -> None:
        payload = random.Random(length).randbytes(length)
        frame = binary(payload)
        assert len(frame) == header_size + length
        assert frame[1] & 0x7F == {7: length if length < 126 else None, 16: 126, 64: 127}[form]
        conn = Connection()
        assert conn.receive_data(frame) == [Message(payload)]
        assert conn.data_to_send() == b""
        assert conn.state is State.OPEN

    @pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536])
    def test_header_alone_yields_nothing(self, length: int) -> None:
        frame = binary(b"x" * length)
        conn = Connection()
        header_size = len(frame) - length
        assert conn.receive_data(frame[: header_size - 4]) == []  # without the masking key
        assert conn.receive_data(frame[header_size - 4 : -1]) == []  # all but the last byte
        assert conn.receive_data(frame[-1:]) == [Message(b"x" * length)]

    def test_several_frames_in_one_chunk(self) -> None:
        data = text("a") + binary(b"b") + text("c")
        assert Connection().receive_data(data) == [Message("a"), Message(b"b"), Message("c")]

    def test_frame_followed_by_partial_frame(self) -> None:
        conn = Connection()
        second = text("second")
        assert conn.receive_data(text("first") + second[:3]) == [Message("first")]
        assert conn.receive_data(second[3:]) == [Message("second")]

    def test_receive_empty_bytes(self) -> None:
        conn = Connection()
        assert conn.receive_data(b"") == []
        assert conn.receive_data() == []
        assert conn.state is State.OPEN

    def test_unmasked_frame(self) -> None:
        failure = fail_with(Connection(), text("hi", mask=None), 1002)
        assert failure.reason == "Client frames must be masked"
        assert failure.cause is not None

    def test_unmasked_frame_fails_from_two_bytes(self) -> None:
        # The header alone shows the frame is unmasked.
        fail_with(Connection(), text("hello", mask=None)[:2], 1002)

    @pytest.mark.parametrize("rsv", [0x10, 0x20, 0x40, 0x70], ids=["rsv3", "rsv2", "rsv1", "all"])
    @pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY, OP_PING])
    def test_reserved_bits(self, rsv: int, opcode: int) -> None:
        failure = fail_with(Connection(), client_frame(opcode, b"x", rsv=rsv), 1002)
        assert "Reserved bits" in failure.reason

    @pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
    def test_reserved_opcodes(self, opcode: int) -> None:
        failure = fail_with(Connection(), client_frame(opcode, b"x"), 1002)
        assert failure.reason == f"Reserved opcode {opcode:#x}"

    @pytest.mark.parametrize("opcode", [3, 0xB])
    def test_reserved_opcode_after_a_valid_frame(self, opcode: int) -> None:
        events = Connection().receive_data(text("ok") + client_frame(opcode, b""))
        assert events[0] == Message("ok")
        assert isinstance(events[1], Failure)
        assert events[1].code == 1002

    @pytest.mark.parametrize(
        ("length", "form"), [(0, 16), (125, 16), (0, 64), (125, 64), (126, 64), (65535, 64)]
    )
    def test_non_minimal_lengths(self, length: int, form: int) -> None:
        frame = binary(b"z" * length, form=form)
        failure = fail_with(Connection(), frame, 1002)
        assert failure.reason == "Non-minimal payload length"

    def test_non_minimal_length_fails_from_header(self) -> None:
        fail_with(Connection(), binary(b"z" * 10, form=16)[:4], 1002)
        fail_with(Connection(), binary(b"z" * 10, form=64)[:10], 1002)

    @pytest.mark.parametrize("length", [1 << 63, (1 << 64) - 1, (1 << 63) + 65536])
    def test_64_bit_length_with_top_bit_set(self, length: int) -> None:
        header = b"\x82\xff" + length.to_bytes(8, "big") + RFC_MASK
        failure = fail_with(Connection(), header, 1002)
        assert failure.reason == "Payload length has its most significant bit set"

    def test_64_bit_length_just_under_top_bit_is_too_big_not_protocol_error(self) -> None:
        header = b"\x82\xff" + ((1 << 63) - 1).to_bytes(8, "big")
        fail_with(Connection(), header, 1009)

    def test_large_length_waits_when_unlimited(self) -> None:
        conn = Connection(max_message_size=None)
        header = b"\x82\xff" + (1 << 40).to_bytes(8, "big") + RFC_MASK
        assert conn.receive_data(header + b"\x00" * 100) == []
        assert conn.state is State.OPEN


STREAM_FRAMES = [
    text("Hello"),
    binary(bytes(range(256)) * 2),  # 16-bit length
    client_frame(OP_PING, b"ping!", mask=b"\x00\x00\x00\x00"),
    text("", mask=b"\xde\xad\xbe\xef"),
    client_frame(OP_TEXT, "κό".encode(), fin=False),
    client_frame(OP_PING, b"", mask=b"\xff\xff\xff\xff"),
    client_frame(OP_CONT, "σμ".encode()[:3], fin=False),  # splits a character across fragments
    client_frame(OP_CONT, "σμ".encode()[3:] + "ε".encode(), fin=True),
    client_frame(OP_PONG, b"pong"),
    client_frame(OP_BINARY, b"ab", fin=False),
    client_frame(OP_CONT, b"", fin=False),
    client_frame(OP_CONT, b"cd", fin=True),
    binary(b""),
    close_frame(1000, b"done"),
]
STREAM = b"".join(STREAM_FRAMES)
STREAM_EVENTS: list[Event] = [
    Message("Hello"),
    Message(bytes(range(256)) * 2),
    Ping(b"ping!"),
    Message(""),
    Ping(b""),
    Message("κόσμε"),
    Pong(b"pong"),
    Message(b"abcd"),
    Message(b""),
    Close(1000, "done"),
]
STREAM_OUTPUT = b"\x8a\x05ping!" + b"\x8a\x00" + b"\x88\x02\x03\xe8"


def feed_pieces(pieces: list[bytes], **kwargs: object) -> tuple[list[Event], bytes]:
    conn = Connection(**kwargs)  # type: ignore[arg-type]
    events: list[Event] = []
    for piece in pieces:
        events += conn.receive_data(piece)
    return events, conn.data_to_send()


class TestSection5_2StreamSplitting:
    def test_whole_stream(self) -> None:
        assert feed_pieces([STREAM]) == (STREAM_EVENTS, STREAM_OUTPUT)

    def test_frame_by_frame(self) -> None:
        assert feed_pieces(STREAM_FRAMES) == (STREAM_EVENTS, STREAM_OUTPUT)

    def test_every_split_point(self) -> None:
        for split in range(len(STREAM) + 1):
            result = feed_pieces([STREAM[:split], STREAM[split:]])
            assert result == (STREAM_EVENTS, STREAM_OUTPUT), split

    @pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
    def test_fixed_size_pieces(self, size: int) -> None:
        pieces = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
        assert feed_pieces(pieces) == (STREAM_EVENTS, STREAM_OUTPUT)

    def test_random_pieces(self) -> None:
        rng = random.Random(6455)
        for _ in range(50):
            cuts = sorted(rng.sample(range(1, len(STREAM)), 5))
            pieces = [STREAM[a:b] for a, b in zip([0, *cuts], [*cuts, len(STREAM)], strict=True)]
            assert feed_pieces(pieces) == (STREAM_EVENTS, STREAM_OUTPUT)

    @pytest.mark.parametrize("size", [1, 7])
    def test_64_bit_frame_in_small_pieces(self, size: int) -> None:
        payload = random.Random(1).randbytes(65536)
        data = text("a") + binary(payload) + text("b")
        pieces = [data[i : i + size] for i in range(0, len(data), size)]
        events, output = feed_pieces(pieces)
        assert events == [Message("a"), Message(payload), Message("b")]
        assert output == b""

    def test_trailing_data_is_parsed_first(self) -> None:
        split = len(STREAM_FRAMES[0]) + 3
        conn = Connection(trailing_data=STREAM[:split])
        events = conn.receive_data(STREAM[split:])
        assert events == STREAM_EVENTS
        assert conn.data_to_send() == STREAM_OUTPUT

    def test_trailing_data_alone(self) -> None:
        conn = Connection(trailing_data=text("head") + binary(b"tail"))
        assert conn.receive_data() == [Message("head"), Message(b"tail")]
        assert conn.receive_data(text("next")) == [Message("next")]

    def test_trailing_data_before_later_input_in_order(self) -> None:
        conn = Connection(trailing_data=text("1"))
        assert conn.receive_data(text("2") + text("3")) == [Message("1"), Message("2"), Message("3")]

    def test_trailing_data_with_a_violation(self) -> None:
        conn = Connection(trailing_data=text("x", mask=None))
        fail_with(conn, text("never"), 1002)


# -- §5.3 masking -------------------------------------------------------------


class TestSection5_3Masking:
    @pytest.mark.parametrize(
        "mask", [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", RFC_MASK, b"\x01\x02\x03\x04", b"\x80\x7f\x00\xff"]
    )
    def test_any_mask_key_unmasks(self, mask: bytes) -> None:
        payload = bytes(range(256))
        assert Connection().receive_data(binary(payload, mask=mask)) == [Message(payload)]

    def test_each_frame_uses_its_own_key(self) -> None:
        data = b"".join(binary(b"same payload", mask=bytes((i, i * 3, 255 - i, 7))) for i in range(10))
        assert Connection().receive_data(data) == [Message(b"same payload")] * 10

    def test_every_payload_length_up_to_70(self) -> None:
        for length in range(71):
            payload = random.Random(length).randbytes(length)
            assert Connection().receive_data(binary(payload)) == [Message(payload)], length

    def test_masked_payload_differs_on_the_wire(self) -> None:
        frame = text("Hello")
        assert b"Hello" not in frame
        assert Connection().receive_data(frame) == [Message("Hello")]


# -- §5.4 fragmentation -------------------------------------------------------


class TestSection5_4Fragmentation:
    def test_fragmented_text(self) -> None:
        data = client_frame(OP_TEXT, b"Hel", fin=False) + client_frame(OP_CONT, b"lo")
        assert Connection().receive_data(data) == [Message("Hello")]

    def test_fragmented_binary_many_pieces(self) -> None:
        pieces = [bytes([i]) * i for i in range(1, 20)]
        data = client_frame(OP_BINARY, pieces[0], fin=False)
        data += b"".join(client_frame(OP_CONT, piece, fin=False) for piece in pieces[1:-1])
        data += client_frame(OP_CONT, pieces[-1])
        events = Connection().receive_data(data)
        assert events == [Message(b"".join(pieces))]
        assert type(events[0].data) is bytes  # type: ignore[union-attr]

    def test_fragments_yield_nothing_until_the_last(self) -> None:
        conn = Connection()
        assert conn.receive_data(client_frame(OP_TEXT, b"a", fin=False)) == []
        assert conn.receive_data(client_frame(OP_CONT, b"b", fin=False)) == []
        assert conn.receive_data(client_frame(OP_CONT, b"c")) == [Message("abc")]
        # The connection is ready for a new message afterwards.
        assert conn.receive_data(client_frame(OP_BINARY, b"d", fin=False) + client_frame(OP_CONT, b"e")) == [
            Message(b"de")
        ]

    @pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
    def test_empty_fragments(self, opcode: int) -> None:
        data = client_frame(opcode, b"", fin=False) + client_frame(OP_CONT, b"", fin=False)
        data += client_frame(OP_CONT, b"")
        expected = "" if opcode == OP_TEXT else b""
        assert Connection().receive_data(data) == [Message(expected)]

    def test_interleaved_pings_are_answered(self) -> None:
        conn = Connection()
        data = (
            client_frame(OP_TEXT, b"fragment1", fin=False)
            + client_frame(OP_PING, b"p1")
            + client_frame(OP_CONT, b"fragment2", fin=False)
            + client_frame(OP_PONG, b"unsolicited")
            + client_frame(OP_PING, b"p2")
            + client_frame(OP_CONT, b"fragment3")
        )
        events = conn.receive_data(data)
        assert events == [
            Ping(b"p1"),
            Pong(b"unsolicited"),
            Ping(b"p2"),
            Message("fragment1fragment2fragment3"),
        ]
        assert server_frames(conn.data_to_send()) == [(OP_PONG, True, b"p1"), (OP_PONG, True, b"p2")]

    def test_interleaved_close_ends_the_message(self) -> None:
        conn = Connection()
        data = client_frame(OP_TEXT, b"part", fin=False) + close_frame(1000) + client_frame(OP_CONT, b"rest")
        assert conn.receive_data(data) == [Close(1000, "")]

    @pytest.mark.parametrize("fin", [True, False])
    def test_continuation_without_start(self, fin: bool) -> None:
        failure = fail_with(Connection(), client_frame(OP_CONT, b"x", fin=fin), 1002)
        assert failure.reason == "Continuation frame without a message to continue"

    def test_continuation_after_a_finished_message(self) -> None:
        conn = Connection()
        assert conn.receive_data(client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_CONT, b"b")) == [
            Message("ab")
        ]
        fail_with(conn, client_frame(OP_CONT, b"c"), 1002)

    @pytest.mark.parametrize("first", [OP_TEXT, OP_BINARY])
    @pytest.mark.parametrize("second", [OP_TEXT, OP_BINARY])
    @pytest.mark.parametrize("fin", [True, False])
    def test_new_data_frame_inside_fragmented_message(self, first: int, second: int, fin: bool) -> None:
        conn = Connection()
        assert conn.receive_data(client_frame(first, b"a", fin=False)) == []
        failure = fail_with(conn, client_frame(second, b"b", fin=fin), 1002)
        assert failure.reason == "New data frame before the fragmented message ended"

    def test_new_data_frame_fails_from_its_header(self) -> None:
        conn = Connection()
        conn.receive_data(client_frame(OP_TEXT, b"a", fin=False))
        fail_with(conn, client_frame(OP_TEXT, b"bbbb")[:2], 1002)


# -- §5.5 control frames ------------------------------------------------------


class TestSection5_5ControlFrames:
    @pytest.mark.parametrize("opcode", [OP_CLOSE, OP_PING, OP_PONG])
    def test_control_frame_over_125_bytes(self, opcode: int) -> None:
        payload = b"\x03\xe8" + b"x" * 124  # 126 bytes, a valid close code for OP_CLOSE
        failure = fail_with(Connection(), client_frame(opcode, payload), 1002)
        assert failure.reason == "Control frame payload over 125 bytes"

    @pytest.mark.parametrize("opcode", [OP_PING, OP_PONG])
    def test_control_frame_over_125_fails_from_header(self, opcode: int) -> None:
        fail_with(Connection(), client_frame(opcode, b"x" * 126)[:4], 1002)

    def test_control_frame_of_125_bytes(self) -> None:
        conn = Connection()
        assert conn.receive_data(client_frame(OP_PING, b"p" * 125)) == [Ping(b"p" * 125)]
        assert conn.data_to_send() == b"\x8a\x7d" + b"p" * 125

    @pytest.mark.parametrize("opcode", [OP_CLOSE, OP_PING, OP_PONG])
    def test_fragmented_control_frame(self, opcode: int) -> None:
        failure = fail_with(Connection(), client_frame(opcode, b"", fin=False), 1002)
        assert failure.reason == "Fragmented control frame"

    def test_control_frames_do_not_count_toward_message_size(self) -> None:
        conn = Connection(max_message_size=10)
        data = (
            client_frame(OP_BINARY, b"12345", fin=False)
            + client_frame(OP_PING, b"x" * 100)
            + client_frame(OP_CONT, b"67890")
        )
        assert conn.receive_data(data) == [Ping(b"x" * 100), Message(b"1234567890")]


class TestSection5_5_1Close:
    def test_empty_close(self) -> None:
        conn = Connection()
        assert conn.receive_data(close_frame()) == [Close(1005, "")]
        assert conn.data_to_send() == b"\x88\x00"
        assert conn.state is State.CLOSED
        assert conn.close == Close(1005, "")
        assert conn.close_received and conn.close_sent
        assert conn.failure is None

    @pytest.mark.parametrize(("code", "reason"), [(1000, ""), (1001, "going away"), (4000, "κόσμε")])
    def test_close_with_code_and_reason(self, code: int, reason: str) -> None:
        conn = Connection()
        assert conn.receive_data(close_frame(code, reason.encode())) == [Close(code, reason)]
        assert server_frames(conn.data_to_send()) == [(OP_CLOSE, True, code.to_bytes(2, "big"))]
        assert conn.state is State.CLOSED

    def test_close_reason_of_123_bytes(self) -> None:
        reason = "r" * 123
        assert Connection().receive_data(close_frame(1000, reason.encode())) == [Close(1000, reason)]

    def test_one_byte_close_payload(self) -> None:
        failure = fail_with(Connection(), client_frame(OP_CLOSE, b"\x03"), 1002)
        assert failure.reason == "Close frame payload of 1 byte"

    def test_invalid_utf8_reason(self) -> None:
        fail_with(Connection(), close_frame(1000, b"\xff\xfe"), 1007)

    def test_truncated_utf8_reason(self) -> None:
        fail_with(Connection(), close_frame(1000, "€".encode()[:2]), 1007)

    def test_no_echo_when_we_closed_first(self) -> None:
        conn = Connection()
        assert conn.send_close(1000, "bye") == b"\x88\x05\x03\xe8bye"
        assert conn.state is State.CLOSING
        assert conn.receive_data(close_frame(1000)) == [Close(1000, "")]
        assert conn.data_to_send() == b""
        assert conn.state is State.CLOSED

    def test_no_events_after_close(self) -> None:
        conn = Connection()
        assert conn.receive_data(close_frame(1000) + text("after") + client_frame(OP_PING, b"p")) == [
            Close(1000, "")
        ]
        assert conn.data_to_send() == b"\x88\x02\x03\xe8"
        assert conn.receive_data(text("later")) == []
        assert conn.receive_data(client_frame(OP_PING, b"p")) == []
        assert conn.receive_data(text("x", mask=None)) == []  # not even a failure
        assert conn.data_to_send() == b""
        assert conn.failure is None

    def test_send_close_after_peer_close_returns_nothing(self) -> None:
        conn = Connection()
        conn.receive_data(close_frame(1001))
        assert conn.send_close(1000) == b""


class TestSection5_5_2And5_5_3PingPong:
    @pytest.mark.parametrize("payload", [b"", b"a", b"\x00\xff" * 10, b"p" * 125])
    def test_ping_queues_pong_with_same_payload(self, payload: bytes) -> None:
        conn = Connection()
        assert not conn.has_data_to_send
        assert conn.receive_data(client_frame(OP_PING, payload)) == [Ping(payload)]
        assert conn.has_data_to_send
        assert server_frames(conn.data_to_send()) == [(OP_PONG, True, payload)]
        assert not conn.has_data_to_send
        assert conn.data_to_send() == b""

    def test_several_pings_answered_in_order(self) -> None:
        conn = Connection()
        data = b"".join(client_frame(OP_PING, str(i).encode()) for i in range(5))
        assert conn.receive_data(data) == [Ping(str(i).encode()) for i in range(5)]
        assert server_frames(conn.data_to_send()) == [(OP_PONG, True, str(i).encode()) for i in range(5)]

    def test_pong_queues_nothing(self) -> None:
        conn = Connection()
        assert conn.receive_data(client_frame(OP_PONG, b"hb")) == [Pong(b"hb")]
        assert conn.data_to_send() == b""

    def test_ping_while_closing_is_answered(self) -> None:
        conn = Connection()
        conn.send_close(1000)
        assert conn.receive_data(client_frame(OP_PING, b"x")) == [Ping(b"x")]
        assert conn.data_to_send() == b"\x8a\x01x"

    def test_send_ping(self) -> None:
        conn = Connection()
        assert conn.send_ping() == b"\x89\x00"
        assert conn.send_ping(b"abc") == b"\x89\x03abc"
        assert conn.send_ping(b"p" * 125) == b"\x89\x7d" + b"p" * 125

    def test_send_ping_over_125_bytes(self) -> None:
        with pytest.raises(ValueError, match="125"):
            Connection().send_ping(b"p" * 126)


# -- §5.6 data frames ---------------------------------------------------------


class TestSection5_6DataFrames:
    @pytest.mark.parametrize("data", ["", "a", "Hello, world", "κόσμε", "🎉" * 40, "x" * 70000])
    def test_text_message(self, data: str) -> None:
        events = Connection().receive_data(text(data))
        assert events == [Message(data)]
        assert type(events[0].data) is str  # type: ignore[union-attr]

    @pytest.mark.parametrize("data", [b"", b"\x00", bytes(range(256)), b"\xff" * 1000])
    def test_binary_message(self, data: bytes) -> None:
        events = Connection().receive_data(binary(data))
        assert events == [Message(data)]
        assert type(events[0].data) is bytes  # type: ignore[union-attr]

    def test_binary_is_not_decoded(self) -> None:
        # Invalid UTF-8 is fine in a binary message.
        assert Connection().receive_data(binary(b"\xff\xfe")) == [Message(b"\xff\xfe")]

    @pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
    def test_send_text_bytes(self, length: int) -> None:
        data = "t" * length
        assert Connection().send_text(data) == expected_header(OP_TEXT, length) + data.encode()

    @pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536])
    def test_send_binary_bytes(self, length: int) -> None:
        data = bytes(i & 0xFF for i in range(length))
        assert Connection().send_binary(data) == expected_header(OP_BINARY, length) + data

    def test_send_text_encodes_utf8(self) -> None:
        assert Connection().send_text("κόσμε") == b"\x81\x0a" + "κόσμε".encode()

    @pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=["bytes", "bytearray", "memoryview"])
    def test_send_binary_accepts_buffers(self, wrap: Callable[[bytes], object]) -> None:
        frame = Connection().send_binary(wrap(b"abc"))  # type: ignore[arg-type]
        assert frame == b"\x82\x03abc"
        assert type(frame) is bytes

    def test_send_does_not_queue(self) -> None:
        conn = Connection()
        conn.send_text("x")
        conn.send_binary(b"y")
        conn.send_ping(b"z")
        assert conn.data_to_send() == b""

    def test_sent_frames_parse_as_server_frames(self) -> None:
        conn = Connection()
        data = conn.send_text("a" * 200) + conn.send_binary(b"b" * 70000) + conn.send_ping(b"c")
        assert server_frames(data) == [
            (OP_TEXT, True, b"a" * 200),
            (OP_BINARY, True, b"b" * 70000),
            (OP_PING, True, b"c"),
        ]


# -- §5.7 examples ------------------------------------------------------------


class TestSection5_7Examples:
    def test_single_frame_masked_text(self) -> None:
        frame = bytes([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
        assert frame == text("Hello")
        assert Connection().receive_data(frame) == [Message("Hello")]

    def test_single_frame_unmasked_text_is_rejected_from_a_client(self) -> None:
        frame = bytes([0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])
        fail_with(Connection(), frame, 1002)

    def test_single_frame_unmasked_text_is_what_we_send(self) -> None:
        assert Connection().send_text("Hello") == bytes([0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])

    def test_fragmented_text_masked(self) -> None:
        # The RFC's "Hel" + "lo" example, masked as a client must.
        data = bytes([0x01, 0x83]) + RFC_MASK + bytes([0x48 ^ 0x37, 0x65 ^ 0xFA, 0x6C ^ 0x21])
        data += bytes([0x80, 0x82]) + RFC_MASK + bytes([0x6C ^ 0x37, 0x6F ^ 0xFA])
        assert Connection().receive_data(data) == [Message("Hello")]

    def test_ping_and_its_pong(self) -> None:
        # Unmasked Ping "Hello" is what the server's pong looks like (with opcode 0xA).
        conn = Connection()
        ping = bytes([0x89, 0x85]) + RFC_MASK + bytes([0x7F, 0x9F, 0x4D, 0x51, 0x58])
        assert conn.receive_data(ping) == [Ping(b"Hello")]
        assert conn.data_to_send() == bytes([0x8A, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])

    def test_masked_pong(self) -> None:
        pong = bytes([0x8A, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
        assert Connection().receive_data(pong) == [Pong(b"Hello")]

    def test_256_bytes_binary_header(self) -> None:
        assert Connection().send_binary(b"\x00" * 256)[:4] == bytes([0x82, 0x7E, 0x01, 0x00])

    def test_64_kib_binary_header(self) -> None:
        assert Connection().send_binary(b"\x00" * 65536)[:10] == bytes(
            [0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
        )

    def test_256_and_64_kib_masked_from_client(self) -> None:
        conn = Connection()
        small, big = b"\x01" * 256, b"\x02" * 65536
        frames = binary(small) + binary(big)
        assert frames[:4] == bytes([0x82, 0xFE, 0x01, 0x00])
        assert conn.receive_data(frames) == [Message(small), Message(big)]


# -- §7 closing, states and status codes --------------------------------------


class TestSection7ClosingStates:
    def test_initial_state(self) -> None:
        conn = Connection()
        assert conn.state is State.OPEN
        assert (conn.close_sent, conn.close_received, conn.close, conn.failure) == (False, False, None, None)
        assert conn.max_message_size == DEFAULT_MAX_MESSAGE_SIZE

    def test_state_numbers_match_ready_state(self) -> None:
        assert [State.CONNECTING, State.OPEN, State.CLOSING, State.CLOSED] == [0, 1, 2, 3]

    def test_open_to_closing_to_closed(self) -> None:
        conn = Connection()
        assert conn.send_close(1000) == b"\x88\x02\x03\xe8"
        assert conn.state is State.CLOSING
        assert conn.close_sent and not conn.close_received
        # Data still arrives while closing (§7.1.2 lets the peer finish sending).
        assert conn.receive_data(text("late")) == [Message("late")]
        assert conn.receive_data(close_frame(1000)) == [Close(1000, "")]
        assert conn.state is State.CLOSED
        assert conn.close_received

    def test_open_to_closed_on_peer_close(self) -> None:
        conn = Connection()
        conn.receive_data(close_frame(1001, b"bye"))
        assert conn.state is State.CLOSED
        assert conn.close == Close(1001, "bye")

    def test_open_to_closed_on_failure(self) -> None:
        conn = Connection()
        fail_with(conn, text("x", mask=None), 1002)
        assert conn.close_sent

    def test_failure_while_closing_queues_no_second_close(self) -> None:
        conn = Connection()
        conn.send_close(1000)
        events = conn.receive_data(text("x", mask=None))
        assert len(events) == 1 and isinstance(events[0], Failure) and events[0].code == 1002
        assert conn.state is State.CLOSED
        assert conn.data_to_send() == b""

    def test_send_close_twice(self) -> None:
        conn = Connection()
        assert conn.send_close() == b"\x88\x00"
        assert conn.send_close() == b""
        assert conn.send_close(1000, "again") == b""
        assert conn.state is State.CLOSING

    def test_send_close_after_failure(self) -> None:
        conn = Connection()
        fail_with(conn, text("x", mask=None), 1002)
        assert conn.send_close(1000) == b""

    @pytest.mark.parametrize(
        ("code", "reason", "frame"),
        [
            (None, "", b"\x88\x00"),
            (1000, "", b"\x88\x02\x03\xe8"),
            (1000, "bye", b"\x88\x05\x03\xe8bye"),
            (None, "bye", b"\x88\x05\x03\xe8bye"),  # WHATWG: a reason alone means 1000
            (4999, "κ", b"\x88\x04\x13\x87" + "κ".encode()),
            (3000, "r" * 123, b"\x88\x7d\x0b\xb8" + b"r" * 123),
        ],
    )
    def test_send_close_bytes(self, code: int | None, reason: str, frame: bytes) -> None:
        assert Connection().send_close(code, reason) == frame

    @pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, -1, 65536])
    def test_send_close_invalid_code(self, code: int) -> None:
        conn = Connection()
        with pytest.raises(ValueError, match="Invalid close code"):
            conn.send_close(code)
        assert conn.state is State.OPEN
        assert not conn.close_sent

    @pytest.mark.parametrize("code", ["1000", 1000.0, True])
    def test_send_close_non_int_code(self, code: object) -> None:
        with pytest.raises(ValueError, match="Invalid close code"):
            Connection().send_close(code)  # type: ignore[arg-type]

    @pytest.mark.parametrize("code", [1000, None])
    @pytest.mark.parametrize("reason", ["r" * 124, "é" * 62, "🎉" * 31])
    def test_send_close_reason_too_long(self, code: int | None, reason: str) -> None:
        conn = Connection()
        with pytest.raises(ValueError, match="123 UTF-8 bytes"):
            conn.send_close(code, reason)
        assert conn.state is State.OPEN

    @pytest.mark.parametrize(
        "send",
        [
            lambda conn: conn.send_text("x"),
            lambda conn: conn.send_binary(b"x"),
            lambda conn: conn.send_ping(b""),
        ],
        ids=["text", "binary", "ping"],
    )
    @pytest.mark.parametrize(
        "end",
        [
            lambda conn: conn.send_close(1000),
            lambda conn: (conn.receive_data(close_frame(1000)), conn.data_to_send()),
            lambda conn: (conn.receive_data(text("x", mask=None)), conn.data_to_send()),
        ],
        ids=["closing", "closed-by-peer", "failed"],
    )
    def test_sending_after_close_raises(
        self, send: Callable[[Connection], bytes], end: Callable[[Connection], object]
    ) -> None:
        conn = Connection()
        end(conn)
        with pytest.raises(InvalidStateError, match="CLOS"):
            send(conn)

    @pytest.mark.parametrize(
        "violation_or_close", [text("x", mask=None), close_frame(1000)], ids=["failed", "closed-by-peer"]
    )
    def test_messages_before_the_close_can_still_be_answered(self, violation_or_close: bytes) -> None:
        # Autobahn 3.2: the reply to a message parsed before a violation (or the
        # peer's close) goes out before our close frame, not never.
        conn = Connection()
        events = conn.receive_data(text("hello") + violation_or_close)
        assert isinstance(events[0], Message)
        reply = conn.send_text("hello")
        assert reply == b"\x81\x05hello"
        assert conn.data_to_send()[0] == 0x88
        with pytest.raises(InvalidStateError):
            conn.send_text("too late")


VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
INVALID_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


class TestSection7_4StatusCodes:
    @pytest.mark.parametrize("code", VALID_CODES)
    def test_valid_codes_accepted(self, code: int) -> None:
        conn = Connection()
        assert conn.receive_data(close_frame(code, b"why")) == [Close(code, "why")]
        assert conn.data_to_send() == b"\x88\x02" + code.to_bytes(2, "big")
        assert is_valid_close_code(code)  # the one predicate, for codes sent and received (§7.4)

    @pytest.mark.parametrize("code", INVALID_CODES)
    def test_invalid_codes_fail(self, code: int) -> None:
        conn = Connection()
        failure = fail_with(conn, close_frame(code), 1002)
        assert failure.reason == f"Invalid close code {code}"
        assert conn.close is None and not conn.close_received
        assert not is_valid_close_code(code)

    @pytest.mark.parametrize("code", VALID_CODES)
    def test_valid_codes_sendable(self, code: int) -> None:
        assert Connection().send_close(code) == b"\x88\x02" + code.to_bytes(2, "big")


# -- §8.1 UTF-8 ---------------------------------------------------------------

INVALID_UTF8 = [
    b"\xff",
    b"\xfe",
    b"\xc0\xaf",  # overlong "/"
    b"\xe0\x80\xaf",  # overlong
    b"\xed\xa0\x80",  # UTF-16 surrogate
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\x80",  # lone continuation byte
    b"\xe2\x82",  # truncated "€"
    b"Hello \xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
]


class TestSection8_1Utf8:
    @pytest.mark.parametrize("payload", INVALID_UTF8)
    def test_invalid_utf8_in_single_frame(self, payload: bytes) -> None:
        failure = fail_with(Connection(), client_frame(OP_TEXT, payload), 1007)
        assert isinstance(failure.cause, UnicodeDecodeError)

    @pytest.mark.parametrize("payload", INVALID_UTF8)
    def test_invalid_utf8_in_fragmented_message(self, payload: bytes) -> None:
        data = client_frame(OP_TEXT, b"ok", fin=False) + client_frame(OP_CONT, payload)
        fail_with(Connection(), data, 1007)

    @pytest.mark.parametrize("payload", [b"\xff", b"ok\xfe", b"\xc0\xaf", b"\xf4\x90", b"\x80rest"])
    def test_invalid_first_fragment_fails_at_once(self, payload: bytes) -> None:
        # Before any later fragment is fed (§8.1 "fail fast", Autobahn 6.4).
        conn = Connection()
        fail_with(conn, client_frame(OP_TEXT, payload, fin=False), 1007)
        assert conn.receive_data(client_frame(OP_CONT, b"more")) == []

    def test_invalid_middle_fragment_fails_at_once(self) -> None:
        conn = Connection()
        assert conn.receive_data(client_frame(OP_TEXT, "κό".encode(), fin=False)) == []
        fail_with(conn, client_frame(OP_CONT, b"\xf4\x90\x80\x80", fin=False), 1007)

    def test_truncated_character_at_the_end_of_a_fragmented_message(self) -> None:
        conn = Connection()
        assert conn.receive_data(client_frame(OP_TEXT, b"a\xe2", fin=False)) == []
        assert conn.receive_data(client_frame(OP_CONT, b"\x82", fin=False)) == []
        fail_with(conn, client_frame(OP_CONT, b""), 1007)

    def test_character_split_across_every_fragment_boundary(self) -> None:
        data = "aκόσμε🎉€z".encode()
        for cut in range(len(data) + 1):
            frames = client_frame(OP_TEXT, data[:cut], fin=False) + client_frame(OP_CONT, data[cut:])
            assert Connection().receive_data(frames) == [Message(data.decode())], cut

    def test_one_byte_fragments(self) -> None:
        data = "κόσμε🎉".encode()
        frames = client_frame(OP_TEXT, data[:1], fin=False)
        frames += b"".join(client_frame(OP_CONT, data[i : i + 1], fin=False) for i in range(1, len(data)))
        frames += client_frame(OP_CONT, b"")
        assert Connection().receive_data(frames) == [Message("κόσμε🎉")]

    def test_valid_then_invalid_in_one_chunk(self) -> None:
        events = Connection().receive_data(text("good") + client_frame(OP_TEXT, b"\xff"))
        assert events[0] == Message("good")
        assert isinstance(events[1], Failure) and events[1].code == 1007

    @pytest.mark.parametrize("alphabet", ["ascii", "a€ü", "aκ🎉", "🎉"])
    def test_large_and_small_fragments_in_any_mix(self, alphabet: str) -> None:
        # Runs of 4 KiB and more are decoded as they are checked, smaller ones at the
        # end (Connection._check_utf8): any mix, cut inside characters, gives the text.
        rng = random.Random(alphabet)
        chars = "abc xyz" if alphabet == "ascii" else alphabet
        message = "".join(rng.choice(chars) for _ in range(60_000))
        data = message.encode()
        cuts = sorted(rng.sample(range(1, len(data)), 40))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        frames = client_frame(OP_TEXT, pieces[0], fin=False)
        frames += b"".join(client_frame(OP_CONT, piece, fin=False) for piece in pieces[1:])
        frames += client_frame(OP_CONT, b"")
        for size in (len(frames), 65536, 1000):  # whole, in reads, in small reads
            conn = Connection(max_message_size=None)
            events: list[Event] = []
            for start in range(0, len(frames), size):
                events += conn.receive_data(frames[start : start + size])
            assert events == [Message(message)], size

    @pytest.mark.parametrize("where", [10, 5000, 20_000, 39_999])
    def test_invalid_byte_inside_a_large_run_fails_at_once(self, where: int) -> None:
        data = bytearray("κόσμε".encode() * 4000)  # 40,000 bytes
        data[where] = 0xFF
        conn = Connection()
        assert conn.receive_data(client_frame(OP_TEXT, b"a" * 100, fin=False)) == []
        fail_with(conn, client_frame(OP_CONT, bytes(data), fin=False), 1007)

    def test_a_large_text_frame_in_reads_fails_at_its_first_invalid_read(self) -> None:
        # Autobahn 6.4.3 at scale: the invalid byte is in the second 64 KiB read.
        payload = bytearray("€".encode() * 100_000)
        payload[70_000] = 0xFF
        frame = client_frame(OP_TEXT, bytes(payload))
        conn = Connection(max_message_size=None)
        assert conn.receive_data(frame[:65536]) == []
        fail_with(conn, frame[65536:140_000], 1007)


# -- §10.4 limits: message size -----------------------------------------------


class TestMessageSizeLimit:
    @pytest.mark.parametrize(("length", "header_size"), [(101, 2), (1000, 4), (70000, 10)])
    def test_too_big_from_header_alone(self, length: int, header_size: int) -> None:
        conn = Connection(max_message_size=100)
        header = binary(b"\x00" * length)[:header_size]
        failure = fail_with(conn, header, 1009)
        assert failure.reason == f"Message of {length} bytes is over the limit of 100"

    def test_exactly_the_limit(self) -> None:
        conn = Connection(max_message_size=100)
        assert conn.receive_data(binary(b"x" * 100)) == [Message(b"x" * 100)]
        assert conn.receive_data(text("y" * 100)) == [Message("y" * 100)]

    @pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
    def test_fragmented_total_over_the_limit(self, opcode: int) -> None:
        conn = Connection(max_message_size=100)
        assert conn.receive_data(client_frame(opcode, b"a" * 60, fin=False)) == []
        assert conn.receive_data(client_frame(OP_CONT, b"b" * 40, fin=False)) == []
        # Only the header of the fragment that goes over.
        failure = fail_with(conn, client_frame(OP_CONT, b"c" * 10)[:2], 1009)
        assert failure.reason == "Message of 110 bytes is over the limit of 100"

    def test_fragmented_total_at_the_limit(self) -> None:
        conn = Connection(max_message_size=100)
        data = client_frame(OP_TEXT, b"a" * 50, fin=False) + client_frame(OP_CONT, b"b" * 50)
        assert conn.receive_data(data) == [Message("a" * 50 + "b" * 50)]
        # The count starts again for the next message.
        data = client_frame(OP_BINARY, b"c" * 90, fin=False) + client_frame(OP_CONT, b"d" * 10)
        assert conn.receive_data(data) == [Message(b"c" * 90 + b"d" * 10)]

    @pytest.mark.parametrize("limit", [None, 0])
    def test_no_limit(self, limit: int | None) -> None:
        conn = Connection(max_message_size=limit)
        assert conn.max_message_size is None
        assert conn.receive_data(binary(b"x" * 70000)) == [Message(b"x" * 70000)]

    def test_default_limit_from_header(self) -> None:
        header = b"\x82\xff" + (DEFAULT_MAX_MESSAGE_SIZE + 1).to_bytes(8, "big")
        fail_with(Connection(), header, 1009)


# -- §7.1.7 failing the connection --------------------------------------------


class TestSection7_1_7FailTheConnection:
    def test_failure_close_frame_carries_the_code(self) -> None:
        conn = Connection()
        events = conn.receive_data(client_frame(OP_CONT, b"x"))
        (failure,) = events
        assert isinstance(failure, Failure)
        assert conn.data_to_send() == (
            b"\x88" + bytes((2 + len(failure.reason),)) + b"\x03\xea" + failure.reason.encode()
        )

    def test_pending_pong_is_kept_before_the_failure_close(self) -> None:
        conn = Connection()
        events = conn.receive_data(client_frame(OP_PING, b"p") + client_frame(OP_CONT, b"x"))
        assert events[0] == Ping(b"p")
        assert [frame[0] for frame in server_frames(conn.data_to_send())] == [OP_PONG, OP_CLOSE]

    def test_no_events_after_failure(self) -> None:
        conn = Connection()
        fail_with(conn, client_frame(OP_PING, b"", fin=False) + text("same chunk"), 1002)
        assert conn.receive_data(text("later")) == []
        assert conn.receive_data(close_frame(1000)) == []
        assert conn.data_to_send() == b""
        assert conn.close is None

    def test_failure_discards_partial_message(self) -> None:
        conn = Connection()
        conn.receive_data(client_frame(OP_TEXT, b"partial", fin=False))
        fail_with(conn, text("x", mask=None), 1002)
        assert conn.receive_data(client_frame(OP_CONT, b"end")) == []

    def test_garbage_never_raises(self) -> None:
        rng = random.Random(6455)
        for _ in range(300):
            conn = Connection(max_message_size=1000)
            events: list[Event] = []
            for _ in range(5):
                events += conn.receive_data(rng.randbytes(rng.randrange(1, 40)))
            failures = [event for event in events if isinstance(event, Failure)]
            assert len(failures) <= 1
            if failures:
                assert events[-1] is failures[0]
                assert conn.state is State.CLOSED
                assert failures[0].code in (1002, 1007, 1009)

    def test_mutated_valid_stream_never_raises(self) -> None:
        rng = random.Random(1)
        for _ in range(300):
            data = bytearray(STREAM)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            conn = Connection()
            events = conn.receive_data(bytes(data))
            assert all(not isinstance(event, Failure) for event in events[:-1])
            if events and isinstance(events[-1], Failure):
                assert events[-1].code in (1002, 1007, 1009)

    def test_internal_error_is_1011(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def boom(self: Connection, first: int, payload: bytes, events: list[Event]) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(Connection, "_on_frame", boom)
        conn = Connection()
        # Two frames in one read take the general parser (one whole frame takes a fast path).
        events = conn.receive_data(text("x") + text("y"))
        assert len(events) == 1
        failure = events[0]
        assert isinstance(failure, Failure)
        assert (failure.code, failure.reason) == (1011, "Internal error")
        assert isinstance(failure.cause, RuntimeError)
        assert str(failure.cause) == "a bug"
        assert conn.state is State.CLOSED
        assert conn.data_to_send() == b"\x88\x10\x03\xf3Internal error"

    def test_internal_error_in_masking_is_1011(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def broken_mask(data: bytes, mask: bytes) -> bytes:
            raise RuntimeError("mask bug")

        monkeypatch.setattr(connection_module, "apply_mask", broken_mask)
        conn = Connection()
        fail_with(conn, binary(b"abc"), 1011)
