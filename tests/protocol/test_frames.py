"""RFC 6455 §5.2 frame headers: the one decoder, and the close codes of §7.4, with byte strings only."""

from __future__ import annotations

import pytest

from takeover.protocol.connection import Connection, Failure
from takeover.protocol.errors import ProtocolViolation
from takeover.protocol.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    RSV1,
    CloseCode,
    FrameHeader,
    decode_header,
    decode_header_fields,
    is_valid_close_code,
)
from tests.frames import client_frame, length_header


class TestSection5_2DecodeHeader:
    @pytest.mark.parametrize(
        ("length", "form", "size"),
        [(0, 7, 2), (125, 7, 2), (126, 16, 4), (65535, 16, 4), (65536, 64, 10), ((1 << 63) - 1, 64, 10)],
    )
    @pytest.mark.parametrize("masked", [True, False])
    def test_lengths_and_header_sizes(self, length: int, form: int, size: int, masked: bool) -> None:
        second, *rest = length_header(length, form)
        data = bytes((0x82, second | (0x80 if masked else 0), *rest)) + b"\x01\x02\x03\x04" * masked
        expected = FrameHeader(True, 0, OP_BINARY, masked, length, size + 4 * masked)
        assert decode_header(data) == expected
        assert decode_header_fields(data) == tuple(expected)
        # At an offset, as the parser calls it on a buffer of several frames.
        assert decode_header(b"\x00" * 3 + data, 3) == expected

    @pytest.mark.parametrize(
        ("first", "fields"),
        [
            (0x81, (True, 0, OP_TEXT)),
            (0x01, (False, 0, OP_TEXT)),
            (0x00, (False, 0, OP_CONT)),
            (0xC1, (True, RSV1, OP_TEXT)),
            (0xF8, (True, 0x70, OP_CLOSE)),
            (0x3F, (False, 0x30, 0xF)),  # reserved opcodes and bits are decoded, Connection refuses them
        ],
    )
    def test_first_byte(self, first: int, fields: tuple[bool, int, int]) -> None:
        header = decode_header(bytes((first, 0x80)))
        assert header is not None
        assert (header.fin, header.rsv, header.opcode) == fields

    def test_none_until_the_length_is_complete(self) -> None:
        for frame in (client_frame(OP_BINARY, b"x" * 300), client_frame(OP_BINARY, b"x" * 70000)):
            size = 4 if len(frame) < 1000 else 10
            for cut in range(size):
                assert decode_header(frame[:cut]) is None, cut
            # The masking key and payload need not be there yet (§5.2 checks need only the length).
            assert decode_header(frame[:size]) is not None

    @pytest.mark.parametrize(("length", "form"), [(0, 16), (125, 16), (0, 64), (65535, 64)])
    def test_non_minimal_lengths_are_violations(self, length: int, form: int) -> None:
        data = bytes((0x82,)) + length_header(length, form)
        with pytest.raises(ProtocolViolation, match="Non-minimal payload length") as info:
            decode_header(data)
        assert info.value.code == 1002

    def test_64_bit_length_with_the_top_bit_set_is_a_violation(self) -> None:
        data = b"\x82\x7f" + (1 << 63).to_bytes(8, "big")
        with pytest.raises(ProtocolViolation, match="most significant bit") as info:
            decode_header(data)
        assert info.value.code == 1002

    def test_single_frame_fast_path_follows_the_same_rules(self) -> None:
        # Connection._single_frame reads a whole small frame inline; fed in two pieces
        # the same bytes take the general parser (decode_header's rules). Every first
        # byte and every 7-bit length must give the same answer both ways.
        def comparable(events: list[object]) -> list[object]:
            return [("failure", e.code, e.reason) if isinstance(e, Failure) else e for e in events]

        for first in range(256):
            for length in (0, 1, 5, 125):
                frame = bytes((first, 0x80 | length)) + b"\x01\x02\x03\x04" + b"\xc3" * length
                whole = Connection(max_message_size=100).receive_data(frame)
                split = Connection(max_message_size=100)
                pieces = split.receive_data(frame[:1]) + split.receive_data(frame[1:])
                assert comparable(whole) == comparable(pieces), (hex(first), length)


class TestSection7_4CloseCodes:
    def test_close_code_is_an_int_enum_with_the_rfc_values(self) -> None:
        assert CloseCode.NORMAL == 1000
        assert isinstance(CloseCode.NORMAL, int)
        assert [int(code) for code in CloseCode] == [
            1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014
        ]
        assert CloseCode(1009) is CloseCode.TOO_BIG

    def test_close_codes_print_as_numbers(self) -> None:
        assert "%d" % CloseCode.GOING_AWAY == "1001"  # noqa: UP031 (as logging formats it)
        assert f"{CloseCode.GOING_AWAY}" == str(CloseCode.GOING_AWAY) == "1001"
        assert (1001).to_bytes(2, "big") == CloseCode.GOING_AWAY.to_bytes(2, "big")

    @pytest.mark.parametrize("code", [1000, 1001, 1003, 1011, 1014, 3000, 4999])
    def test_one_predicate_for_codes_sent_and_received(self, code: int) -> None:
        assert is_valid_close_code(code)

    @pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
    def test_reserved_and_unassigned_codes(self, code: int) -> None:
        assert not is_valid_close_code(code)


def test_ping_header_is_decoded_like_any_other() -> None:
    header = decode_header(client_frame(OP_PING, b"p"))
    assert header == FrameHeader(True, 0, OP_PING, True, 1, 6)
