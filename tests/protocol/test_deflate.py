"""permessage-deflate (RFC 7692) in the sans-I/O core: negotiation, the codec, the connection.

Byte strings only: no sockets, no gevent. The examples of RFC 7692 §7.2.3 are
checked byte for byte.
"""

from __future__ import annotations

import os
import random
import time
import zlib
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import takeover.protocol.connection as connection_module
from takeover.errors import HandshakeError
from takeover.protocol.connection import Connection, Failure, Message, Ping, State
from takeover.protocol.deflate import (
    FEED_CHUNK,
    INFLATE_CHUNK,
    DeflateError,
    DeflateOptions,
    DeflateParameters,
    MessageTooBig,
    PerMessageDeflate,
    accept_offer,
    negotiate,
)
from takeover.protocol.frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RSV1
from takeover.protocol.handshake import parse_extension, validate_request
from tests.frames import MASK_IMPLEMENTATIONS, client_frame

TAIL = b"\x00\x00\xff\xff"
HELLO = bytes.fromhex("f248cdc9c90700")  # RFC 7692 §7.2.3.1: "Hello" compressed


def response_for(header: str, options: DeflateOptions | None = None) -> str | None:
    """The response header value for a ``Sec-WebSocket-Extensions`` request header, or None."""
    handshake = validate_request(
        "GET",
        "HTTP/1.1",
        {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Extensions": header,
        },
    )
    chosen = negotiate(handshake.extensions, options or DeflateOptions())
    return None if chosen is None else chosen.response


def client_deflate(data: bytes, compressor: zlib._Compress | None = None, bits: int = 15) -> bytes:
    """What a client sends for ``data``: raw DEFLATE, sync-flushed, tail removed (§7.2.1)."""
    compressor = compressor or zlib.compressobj(6, zlib.DEFLATED, -bits)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


def client_inflate(payload: bytes, inflater: zlib._Decompress | None = None, bits: int = 15) -> bytes:
    """What a client reads from a compressed server payload (§7.2.2)."""
    inflater = inflater or zlib.decompressobj(-bits)
    return inflater.decompress(payload + TAIL)


def parse_server_frame(data: bytes) -> tuple[int, int, bytes, bytes]:
    """One unmasked server frame: (first byte, opcode, payload, rest)."""
    first, second = data[0], data[1]
    assert not second & 0x80
    length, pos = second & 0x7F, 2
    if length == 126:
        length, pos = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:
        length, pos = int.from_bytes(data[2:10], "big"), 10
    return first, first & 0x0F, data[pos : pos + length], data[pos + length :]


# -- the header grammar (RFC 6455 §9.1) ------------------------------------------


class TestExtensionGrammar:
    def test_parameters_with_and_without_values(self) -> None:
        offer = parse_extension("permessage-deflate; client_max_window_bits; server_max_window_bits=10")
        assert offer.name == "permessage-deflate"
        assert offer.params == (("client_max_window_bits", None), ("server_max_window_bits", "10"))

    def test_quoted_values_are_unquoted(self) -> None:
        assert parse_extension('x; a="10"; b="\\t\\o\\k"').params == (("a", "10"), ("b", "tok"))

    def test_whitespace_around_separators(self) -> None:
        assert parse_extension("x ;a = 1\t; b").params == (("a", "1"), ("b", None))

    @pytest.mark.parametrize(
        "text",
        ["", ";a", "x;", "x; a=", "x; a==1", "x y", 'x; a="1 0"', 'x; a="10', "x; a=1 2", "x; =1"],
    )
    def test_malformed(self, text: str) -> None:
        with pytest.raises(ValueError):
            parse_extension(text)

    def test_offers_are_split_at_commas_outside_quotes(self) -> None:
        handshake = validate_request(
            "GET",
            "HTTP/1.1",
            [
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Extensions", 'x-foo; a="b,c", permessage-deflate'),
                ("Sec-WebSocket-Extensions", ", permessage-deflate; server_no_context_takeover ,"),
            ],
        )
        assert handshake.extensions == (
            'x-foo; a="b,c"',
            "permessage-deflate",
            "permessage-deflate; server_no_context_takeover",
        )


# -- negotiation (RFC 7692 §7.1) ---------------------------------------------------


class TestNegotiation:
    def test_a_bare_offer(self) -> None:
        assert response_for("permessage-deflate") == "permessage-deflate"

    def test_the_default_offers_of_browsers_and_clients(self) -> None:
        # Chromium, Firefox, websockets, ws: "client_max_window_bits" without a value.
        assert response_for("permessage-deflate; client_max_window_bits") == "permessage-deflate"

    def test_no_offer_no_extension(self) -> None:
        assert response_for("x-webkit-deflate-frame") is None
        assert negotiate((), DeflateOptions()) is None

    def test_server_no_context_takeover_is_granted(self) -> None:
        assert (
            response_for("permessage-deflate; server_no_context_takeover")
            == "permessage-deflate; server_no_context_takeover"
        )

    def test_server_no_context_takeover_from_the_options(self) -> None:
        options = DeflateOptions(server_no_context_takeover=True)
        assert response_for("permessage-deflate", options) == "permessage-deflate; server_no_context_takeover"

    def test_client_no_context_takeover_offered_is_not_required(self) -> None:
        # §7.1.1.2: the server may ignore it (as ws does by default).
        assert response_for("permessage-deflate; client_no_context_takeover") == "permessage-deflate"

    def test_client_no_context_takeover_from_the_options(self) -> None:
        options = DeflateOptions(client_no_context_takeover=True)
        assert response_for("permessage-deflate", options) == "permessage-deflate; client_no_context_takeover"
        both = "permessage-deflate; client_no_context_takeover"
        assert response_for(both, options) == "permessage-deflate; client_no_context_takeover"

    @pytest.mark.parametrize("bits", range(8, 16))
    def test_server_max_window_bits_offered_is_honoured(self, bits: int) -> None:
        header = f"permessage-deflate; server_max_window_bits={bits}"
        assert response_for(header) == f"permessage-deflate; server_max_window_bits={bits}"

    def test_server_max_window_bits_is_the_smaller_of_offer_and_options(self) -> None:
        options = DeflateOptions(server_max_window_bits=10)
        assert response_for("permessage-deflate; server_max_window_bits=12", options).endswith("=10")  # type: ignore[union-attr]
        assert response_for("permessage-deflate; server_max_window_bits=9", options).endswith("=9")  # type: ignore[union-attr]
        # Not offered: announced anyway (§7.1.2.1 allows it).
        assert response_for("permessage-deflate", options) == "permessage-deflate; server_max_window_bits=10"

    def test_client_max_window_bits_needs_the_clients_support(self) -> None:
        options = DeflateOptions(client_max_window_bits=10)
        # §7.1.2.2: without the parameter in the offer, the response must not carry it.
        assert response_for("permessage-deflate", options) == "permessage-deflate"
        assert (
            response_for("permessage-deflate; client_max_window_bits", options)
            == "permessage-deflate; client_max_window_bits=10"
        )
        assert (
            response_for("permessage-deflate; client_max_window_bits=9", options)
            == "permessage-deflate; client_max_window_bits=9"
        )

    def test_client_max_window_bits_with_a_value_is_confirmed(self) -> None:
        assert (
            response_for("permessage-deflate; client_max_window_bits=11")
            == "permessage-deflate; client_max_window_bits=11"
        )

    def test_every_parameter_at_once(self) -> None:
        header = (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
            ' server_max_window_bits="12"; client_max_window_bits=13'
        )
        options = DeflateOptions(client_no_context_takeover=True)
        assert response_for(header, options) == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
            " server_max_window_bits=12; client_max_window_bits=13"
        )

    @pytest.mark.parametrize(
        "params",
        [
            "unknown_parameter",
            "server_no_context_takeover; server_no_context_takeover",
            "client_max_window_bits; client_max_window_bits=10",
            "server_max_window_bits=10; server_max_window_bits=10",
            "server_no_context_takeover=1",
            'client_no_context_takeover="x"',
            "server_max_window_bits",
            "server_max_window_bits=7",
            "server_max_window_bits=16",
            "server_max_window_bits=08",
            "server_max_window_bits=-9",
            "server_max_window_bits=ten",
            "client_max_window_bits=7",
            "client_max_window_bits=16",
            "client_max_window_bits=010",
            'client_max_window_bits="0x9"',
        ],
    )
    def test_an_invalid_offer_is_declined(self, params: str) -> None:
        assert response_for(f"permessage-deflate; {params}") is None
        with pytest.raises(ValueError):
            accept_offer(parse_extension(f"permessage-deflate; {params}").params, DeflateOptions())

    def test_a_later_offer_is_accepted_after_a_declined_one(self) -> None:
        header = "permessage-deflate; server_max_window_bits=16, permessage-deflate; client_max_window_bits"
        assert response_for(header) == "permessage-deflate"

    def test_the_first_acceptable_offer_wins(self) -> None:
        # Autobahn 13.7's offers, in its order.
        header = (
            "permessage-deflate; client_no_context_takeover; client_max_window_bits;"
            " server_no_context_takeover; server_max_window_bits=9,"
            " permessage-deflate; server_no_context_takeover, permessage-deflate"
        )
        assert response_for(header) == (
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=9"
        )

    def test_other_extensions_are_skipped(self) -> None:
        header = "x-webkit-deflate-frame, permessage-foo; bar, permessage-deflate"
        assert response_for(header) == "permessage-deflate"

    @pytest.mark.parametrize(
        "header",
        [
            "permessage-deflate;",
            'permessage-deflate; a="b',
            "permessage-deflate; a=b c",
            'permessage-deflate; client_max_window_bits=""',
            "x-foo;;, permessage-deflate",
        ],
    )
    def test_a_malformed_header_is_refused_with_400(self, header: str) -> None:
        with pytest.raises(HandshakeError) as info:
            response_for(header)
        assert info.value.status == 400
        assert "Sec-WebSocket-Extensions" in str(info.value)

    @pytest.mark.parametrize(
        "options",
        [
            {"level": 10},
            {"level": -2},
            {"threshold": -1},
            {"mem_level": 0},
            {"mem_level": 10},
            {"server_max_window_bits": 7},
            {"server_max_window_bits": 16},
            {"client_max_window_bits": 16},
        ],
    )
    def test_invalid_options(self, options: dict[str, int]) -> None:
        with pytest.raises(ValueError):
            DeflateOptions(**options)  # type: ignore[arg-type]


# -- the codec (RFC 7692 §7.2) --------------------------------------------------------


def codec(options: DeflateOptions | None = None, **params: object) -> PerMessageDeflate:
    return PerMessageDeflate(DeflateParameters(**params), options)  # type: ignore[arg-type]


class TestRfcExamples:
    """RFC 7692 §7.2.3, byte for byte."""

    def test_7_2_3_1_a_message_compressed(self) -> None:
        assert codec().compress(b"Hello") == HELLO
        assert codec().decompress(HELLO, True) == b"Hello"

    def test_7_2_3_2_sharing_the_window(self) -> None:
        deflate = codec()
        assert deflate.compress(b"Hello") == HELLO
        assert deflate.compress(b"Hello") == bytes.fromhex("f200110000")
        inflate = codec()
        assert inflate.decompress(HELLO, True) == b"Hello"
        assert inflate.decompress(bytes.fromhex("f200110000"), True) == b"Hello"

    def test_7_2_3_2_without_context_takeover_every_message_is_alike(self) -> None:
        deflate = codec(server_no_context_takeover=True)
        assert deflate.compress(b"Hello") == HELLO
        assert deflate.compress(b"Hello") == HELLO

    def test_7_2_3_1_fragmented(self) -> None:
        inflate = codec()
        assert inflate.decompress(bytes.fromhex("f248cd"), False) + inflate.decompress(
            bytes.fromhex("c9c90700"), True
        ) == b"Hello"

    def test_7_2_3_3_a_block_with_no_compression(self) -> None:
        assert codec().decompress(bytes.fromhex("000500faff48656c6c6f00"), True) == b"Hello"

    def test_7_2_3_4_a_block_with_bfinal_set(self) -> None:
        inflate = codec()
        assert inflate.decompress(bytes.fromhex("f348cdc9c9070000"), True) == b"Hello"
        # The stream ended: the next message starts a new one.
        assert inflate.decompress(HELLO, True) == b"Hello"

    def test_7_2_3_5_two_deflate_blocks_in_one_message(self) -> None:
        payload = bytes.fromhex("f24805000000ffff") + bytes.fromhex("cac9c90700")
        assert codec().decompress(payload, True) == b"Hello"

    def test_7_2_3_6_an_empty_message(self) -> None:
        assert codec().compress(b"") == b"\x00"
        assert codec().decompress(b"\x00", True) == b""
        assert codec().decompress(b"", True) == b""


class TestCodec:
    @pytest.mark.parametrize("size", [0, 1, 100, 4096, 70_000, 1_000_000])
    @pytest.mark.parametrize("level", [-1, 0, 1, 9])
    def test_round_trips_through_zlib(self, size: int, level: int) -> None:
        rng = random.Random(size)
        words = [rng.randbytes(rng.randint(1, 8)) for _ in range(64)]
        data = b" ".join(rng.choice(words) for _ in range(size // 4))[:size]
        deflate = codec(DeflateOptions(level=level))
        inflater = zlib.decompressobj(-15)
        for _ in range(3):  # context takeover: later messages refer to earlier ones
            payload = deflate.compress(data)
            assert client_inflate(payload, inflater) == data
            assert codec().decompress(client_deflate(data), True) == data

    @pytest.mark.parametrize("bits", range(8, 16))
    def test_server_window_bits(self, bits: int) -> None:
        # 8 is compressed with zlib's 9, whose distances stay within 250 bytes:
        # a client inflating with a 256-byte window reads it.
        rng = random.Random(bits)
        words = [rng.randbytes(3).hex().encode() for _ in range(300)]
        data = b" ".join(rng.choice(words) for _ in range(50_000))
        deflate = codec(server_max_window_bits=bits)
        inflater = zlib.decompressobj(-bits)
        for _ in range(2):
            assert client_inflate(deflate.compress(data), inflater) == data

    def test_mem_level_is_capped_by_the_window(self) -> None:
        assert codec()._mem_level == 8
        assert codec(DeflateOptions(mem_level=9))._mem_level == 9
        assert codec(DeflateOptions(mem_level=3))._mem_level == 3
        assert codec(server_max_window_bits=12)._mem_level == 8
        assert codec(server_max_window_bits=10)._mem_level == 6
        assert codec(server_max_window_bits=8)._mem_level == 5  # compressed with 9 bits

    @pytest.mark.parametrize("bits", range(8, 16))
    def test_client_window_bits(self, bits: int) -> None:
        data = os.urandom(2000) * 50
        compressor = zlib.compressobj(6, zlib.DEFLATED, -max(bits, 9))
        inflate = codec(client_max_window_bits=bits)
        for _ in range(2):
            assert inflate.decompress(client_deflate(data, compressor), True) == data

    def test_no_context_takeover_keeps_no_zlib_state(self) -> None:
        deflate = codec(server_no_context_takeover=True, client_no_context_takeover=True)
        data = b"abc" * 1000
        assert client_inflate(deflate.compress(data)) == data
        assert deflate.decompress(client_deflate(data), True) == data
        assert deflate._deflater is None and deflate._inflater is None
        # Each message is a stream on its own.
        assert deflate.compress(data) == deflate.compress(data)

    def test_context_takeover_keeps_the_windows(self) -> None:
        deflate = codec()
        data = os.urandom(1000)
        first = deflate.compress(data)
        assert len(deflate.compress(data)) < len(first) // 10  # refers to the first one
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        assert deflate.decompress(client_deflate(data, compressor), True) == data
        assert deflate.decompress(client_deflate(data, compressor), True) == data

    def test_client_no_context_takeover_inflates_each_message_alone(self) -> None:
        inflate = codec(client_no_context_takeover=True)
        for _ in range(3):
            assert inflate.decompress(client_deflate(b"again and again"), True) == b"again and again"

    def test_a_message_over_many_frames_and_chunks(self) -> None:
        data = os.urandom(300_000) + bytes(3 * INFLATE_CHUNK)
        payload = client_deflate(data)
        assert len(payload) > 2 * FEED_CHUNK
        inflate = codec()
        pieces = [payload[i : i + 70_000] for i in range(0, len(payload), 70_000)]
        out = b"".join(inflate.decompress(piece, i == len(pieces) - 1) for i, piece in enumerate(pieces))
        assert out == data

    def test_invalid_data(self) -> None:
        with pytest.raises(DeflateError):
            codec().decompress(b"\xff\xff\xff\xff", True)

    def test_the_size_limit_is_exact(self) -> None:
        data = os.urandom(1000)
        assert codec().decompress(client_deflate(data), True, max_size=1000) == data
        with pytest.raises(MessageTooBig):
            codec().decompress(client_deflate(data), True, max_size=999)

    def test_a_bomb_stops_at_the_limit(self) -> None:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        zeros = bytes(1 << 20)
        payload = b"".join(compressor.compress(zeros) for _ in range(256)) + compressor.flush(
            zlib.Z_SYNC_FLUSH
        )
        assert len(payload) < 300_000  # 256 MiB of zeros
        started = time.monotonic()
        with pytest.raises(MessageTooBig):
            codec().decompress(payload, True, max_size=1 << 20)
        assert time.monotonic() - started < 1.0  # stopped after about 1 MiB, not 256


# -- the connection (RFC 7692 §6) -----------------------------------------------------


def deflate_connection(options: DeflateOptions | None = None, **kwargs: object) -> Connection:
    return Connection(extension=codec(options), **kwargs)  # type: ignore[arg-type]


def compressed(opcode: int, data: bytes, **kwargs: object) -> bytes:
    return client_frame(opcode, client_deflate(data), rsv=RSV1, **kwargs)  # type: ignore[arg-type]


def failure(conn: Connection, data: bytes) -> Failure:
    events = conn.receive_data(data)
    assert events and isinstance(events[-1], Failure), events
    assert conn.state is State.CLOSED
    first, opcode, payload, _ = parse_server_frame(conn.data_to_send())
    assert opcode == OP_CLOSE and not first & 0x70
    assert int.from_bytes(payload[:2], "big") == events[-1].code
    return events[-1]


class TestConnection:
    @pytest.fixture(autouse=True, params=MASK_IMPLEMENTATIONS)
    def mask_impl(
        self, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
    ) -> Callable[..., bytes]:
        monkeypatch.setattr(connection_module, "apply_mask", request.param)
        return request.param  # type: ignore[no-any-return]

    def test_a_compressed_text_message(self) -> None:
        conn = deflate_connection()
        assert conn.receive_data(client_frame(OP_TEXT, HELLO, rsv=RSV1)) == [Message("Hello")]

    def test_a_compressed_binary_message(self) -> None:
        data = os.urandom(10_000) * 3
        assert deflate_connection().receive_data(compressed(OP_BINARY, data)) == [Message(data)]

    def test_the_rfc_fragmented_example_with_pings_between(self) -> None:
        conn = deflate_connection()
        frames = (
            client_frame(OP_TEXT, bytes.fromhex("f248cd"), fin=False, rsv=RSV1)
            + client_frame(OP_PING, b"1")
            + client_frame(OP_CONT, bytes.fromhex("c9"), fin=False)
            + client_frame(OP_PING, b"2")
            + client_frame(OP_CONT, bytes.fromhex("c90700"))
        )
        assert conn.receive_data(frames) == [Ping(b"1"), Ping(b"2"), Message("Hello")]
        pongs = conn.data_to_send()
        first, opcode, payload, rest = parse_server_frame(pongs)
        assert (first, opcode, payload) == (0x80 | OP_PONG, OP_PONG, b"1")
        assert parse_server_frame(rest)[1:3] == (OP_PONG, b"2")

    def test_a_fragmented_message_byte_by_byte(self) -> None:
        text = "grüße, " * 3000
        payload = client_deflate(text.encode())
        cut = [0, 7, len(payload) // 2, len(payload)]
        frames = b"".join(
            client_frame(
                OP_TEXT if i == 0 else OP_CONT,
                payload[cut[i] : cut[i + 1]],
                fin=i == len(cut) - 2,
                rsv=RSV1 if i == 0 else 0,
            )
            for i in range(len(cut) - 1)
        )
        conn = deflate_connection()
        events = []
        for byte in frames:
            events += conn.receive_data(bytes((byte,)))
        assert events == [Message(text)]

    @pytest.mark.parametrize("pieces", [2, 3, 17])
    @pytest.mark.parametrize("alphabet", ["abc ", "grüße €", "🎉 a"])
    def test_a_fragmented_compressed_text_message_of_large_runs(self, pieces: int, alphabet: str) -> None:
        # Each fragment inflates to kilobytes: runs the core keeps as text as it checks them.
        rng = random.Random(pieces)
        text = "".join(rng.choice(alphabet) for _ in range(50_000))
        payload = client_deflate(text.encode())
        cut = [len(payload) * i // pieces for i in range(pieces + 1)]
        frames = b"".join(
            client_frame(
                OP_TEXT if i == 0 else OP_CONT,
                payload[cut[i] : cut[i + 1]],
                fin=i == pieces - 1,
                rsv=RSV1 if i == 0 else 0,
            )
            for i in range(pieces)
        )
        assert deflate_connection().receive_data(frames) == [Message(text)]
        # The inflated size counts all of it, also the runs already kept as text.
        limit = len(text.encode()) - 1
        (failure,) = deflate_connection(max_message_size=limit).receive_data(frames)
        assert isinstance(failure, Failure) and failure.code == 1009

    def test_compressed_and_plain_messages_mix(self) -> None:
        conn = deflate_connection()
        data = (
            compressed(OP_TEXT, b"one")
            + client_frame(OP_TEXT, b"two")
            + client_frame(OP_BINARY, b"three", fin=False)
            + client_frame(OP_CONT, b"!")
            + compressed(OP_BINARY, b"four")
        )
        expected = [Message("one"), Message("two"), Message(b"three!"), Message(b"four")]
        assert conn.receive_data(data) == expected
        # The one-frame fast path still takes an uncompressed frame.
        assert conn.receive_data(client_frame(OP_TEXT, b"five")) == [Message("five")]

    def test_context_takeover_across_messages(self) -> None:
        conn = deflate_connection()
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        frames = b"".join(
            client_frame(OP_TEXT, client_deflate(b"Hello", compressor), rsv=RSV1) for _ in range(3)
        )
        assert conn.receive_data(frames) == [Message("Hello")] * 3

    @pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
    def test_rsv1_on_a_control_frame_is_1002(self, opcode: int) -> None:
        payload = b"\x03\xe8" if opcode == OP_CLOSE else b""
        assert failure(deflate_connection(), client_frame(opcode, payload, rsv=RSV1)).code == 1002

    def test_rsv1_on_a_continuation_frame_is_1002(self) -> None:
        data = client_frame(OP_TEXT, bytes.fromhex("f248cd"), fin=False, rsv=RSV1) + client_frame(
            OP_CONT, bytes.fromhex("c9c90700"), rsv=RSV1
        )
        assert failure(deflate_connection(), data).code == 1002

    def test_rsv1_on_an_uncompressed_messages_continuation_is_1002(self) -> None:
        data = client_frame(OP_TEXT, b"He", fin=False) + client_frame(OP_CONT, HELLO, rsv=RSV1)
        assert failure(deflate_connection(), data).code == 1002

    def test_rsv1_without_negotiation_is_1002(self) -> None:
        assert failure(Connection(), client_frame(OP_TEXT, HELLO, rsv=RSV1)).code == 1002

    @pytest.mark.parametrize("rsv", [0x20, 0x10, 0x60, 0x70])
    def test_rsv2_and_rsv3_stay_reserved(self, rsv: int) -> None:
        assert failure(deflate_connection(), client_frame(OP_TEXT, HELLO, rsv=rsv)).code == 1002

    def test_invalid_compressed_data_is_1007(self) -> None:
        failed = failure(deflate_connection(), client_frame(OP_BINARY, b"\xff\xfe\xfd", rsv=RSV1))
        assert (failed.code, failed.reason) == (1007, "Invalid compressed data")
        assert isinstance(failed.cause, DeflateError)
        assert failed.cause.__traceback__ is None and failed.cause.__context__ is None

    def test_invalid_utf8_once_inflated_is_1007(self) -> None:
        assert failure(deflate_connection(), compressed(OP_TEXT, b"ok \xff")).code == 1007

    def test_the_limit_applies_to_the_inflated_size(self) -> None:
        conn = deflate_connection(max_message_size=1000)
        assert conn.receive_data(compressed(OP_BINARY, bytes(1000))) == [Message(bytes(1000))]
        failed = failure(conn, compressed(OP_BINARY, bytes(1001)))
        assert failed.code == 1009
        assert failed.reason == "Message inflates to over the limit of 1000 bytes"
        assert failed.cause is not None and failed.cause.__traceback__ is None  # holds no output

    def test_the_limit_adds_up_the_fragments(self) -> None:
        payload = client_deflate(bytes(3000))
        half = len(payload) // 2
        data = client_frame(OP_BINARY, payload[:half], fin=False, rsv=RSV1) + client_frame(
            OP_CONT, payload[half:]
        )
        assert failure(deflate_connection(max_message_size=2000), data).code == 1009

    def test_the_limit_applies_to_the_compressed_size_from_the_header(self) -> None:
        # As ws: a frame bigger than the limit is refused before its payload arrives.
        conn = deflate_connection(max_message_size=100)
        header = client_frame(OP_BINARY, os.urandom(200), rsv=RSV1)[:8]
        assert failure(conn, header).code == 1009

    def test_a_bomb_fails_fast(self) -> None:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        zeros = bytes(1 << 20)
        payload = b"".join(compressor.compress(zeros) for _ in range(128))
        payload += compressor.flush(zlib.Z_SYNC_FLUSH)[:-4]
        conn = deflate_connection(max_message_size=1 << 20)
        started = time.monotonic()
        assert failure(conn, client_frame(OP_BINARY, payload, rsv=RSV1)).code == 1009
        assert time.monotonic() - started < 1.0

    def test_sending_compresses(self) -> None:
        conn = deflate_connection()
        first, opcode, payload, rest = parse_server_frame(conn.send_text("Hello"))
        assert (first, opcode, payload, rest) == (0x80 | RSV1 | OP_TEXT, OP_TEXT, HELLO, b"")
        first, opcode, payload, _ = parse_server_frame(conn.send_binary(b"Hello"))
        assert (first, payload) == (0x80 | RSV1 | OP_BINARY, bytes.fromhex("f200110000"))

    def test_the_threshold(self) -> None:
        conn = deflate_connection(DeflateOptions(threshold=6))
        assert conn.send_text("Hello") == b"\x81\x05Hello"
        assert conn.send_binary(b"Hello") == b"\x82\x05Hello"
        first, _, payload, _ = parse_server_frame(conn.send_text("Hello!"))
        assert first & RSV1 and client_inflate(payload) == b"Hello!"

    def test_the_default_threshold_follows_ws(self) -> None:
        assert codec().threshold == 0  # context takeover: every message
        assert codec(server_no_context_takeover=True).threshold == 1024
        assert codec(DeflateOptions(threshold=5), server_no_context_takeover=True).threshold == 5

    def test_sent_messages_share_the_window(self) -> None:
        conn = deflate_connection()
        inflater = zlib.decompressobj(-15)
        sizes = []
        for _ in range(3):
            _, _, payload, _ = parse_server_frame(conn.send_text("a message that repeats itself"))
            sizes.append(len(payload))
            assert client_inflate(payload, inflater) == b"a message that repeats itself"
        assert sizes[1] < sizes[0]

    def test_a_failure_drops_the_zlib_state(self) -> None:
        conn = deflate_connection()
        conn.send_text("x")
        assert conn.extension is not None and conn.extension._deflater is not None
        failure(conn, client_frame(OP_PING, b"", rsv=RSV1))
        assert conn.extension._deflater is None and conn.extension._inflater is None


# -- properties: any bytes, any split ------------------------------------------------


# As tests/protocol/test_properties.py: TAKEOVER_HYPOTHESIS_EXAMPLES raises the count locally.
PROFILE = settings(
    max_examples=int(os.environ.get("TAKEOVER_HYPOTHESIS_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def feed_deflate(data: bytes, cuts: list[int], max_message_size: int | None = 4096) -> list[object]:
    conn = Connection(max_message_size=max_message_size, extension=codec())
    events: list[object] = []
    start = 0
    for cut in [*sorted({min(max(cut, 0), len(data)) for cut in cuts}), len(data)]:
        events.extend(conn.receive_data(data[start:cut]))
        start = cut
    return events


def comparable(event: object) -> object:
    return ("failure", event.code, event.reason) if isinstance(event, Failure) else event


@st.composite
def compressed_stream(draw: st.DrawFn) -> tuple[bytes, list[str | bytes]]:
    """Valid client frames on a deflate connection: compressed or not, fragmented, pings between."""
    compressor = zlib.compressobj(draw(st.integers(0, 9)), zlib.DEFLATED, -15)
    frames: list[bytes] = []
    sent: list[str | bytes] = []
    for message in draw(st.lists(st.one_of(st.text(max_size=300), st.binary(max_size=300)), max_size=8)):
        payload = message.encode() if isinstance(message, str) else message
        opcode = OP_TEXT if isinstance(message, str) else OP_BINARY
        deflated = draw(st.booleans())
        if deflated:
            payload = client_deflate(payload, compressor)
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        mask = draw(st.binary(min_size=4, max_size=4))
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            rsv = RSV1 if deflated and index == 0 else 0
            kind = opcode if index == 0 else OP_CONT
            frames.append(client_frame(kind, piece, fin=last, mask=mask, rsv=rsv))
            if not last and draw(st.booleans()):
                frames.append(client_frame(OP_PING, b"p", mask=mask))
        sent.append(message)
    return b"".join(frames), sent


class TestProperties:
    @PROFILE
    @given(st.data())
    def test_arbitrary_bytes_end_in_an_rfc_code(self, data: st.DataObject) -> None:
        raw = data.draw(st.binary(max_size=600))
        # Half of the examples start like a compressed frame, to reach the inflater.
        if raw and data.draw(st.booleans()):
            raw = bytes((0xC0 | (raw[0] & 0x0F),)) + raw[1:]
        cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
        events = feed_deflate(raw, cuts)
        failures = [event for event in events if isinstance(event, Failure)]
        assert len(failures) <= 1
        if failures:
            assert failures[0].code in (1002, 1007, 1009), failures[0]
            assert events[-1] is failures[0]
        assert [comparable(e) for e in events] == [comparable(e) for e in feed_deflate(raw, [])]

    @PROFILE
    @given(st.binary(max_size=800), st.lists(st.integers(0, 800), max_size=4), st.booleans())
    def test_arbitrary_compressed_payloads_inflate_or_fail_with_1007_or_1009(
        self, payload: bytes, cuts: list[int], text: bool
    ) -> None:
        cuts = sorted({min(cut, len(payload)) for cut in cuts})
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        frames = b"".join(
            client_frame(
                (OP_TEXT if text else OP_BINARY) if index == 0 else OP_CONT,
                piece,
                fin=index == len(pieces) - 1,
                rsv=RSV1 if index == 0 else 0,
            )
            for index, piece in enumerate(pieces)
        )
        # A next message too: with context takeover, what the first left in the
        # inflater carries over (possibly as garbage, which is the sender's fault).
        events = feed_deflate(frames + compressed(OP_TEXT, b"next"), [], max_message_size=2000)
        if isinstance(events[-1], Failure):
            assert events[-1].code in (1007, 1009), events[-1]
            assert all(isinstance(event, Message) for event in events[:-1])
        else:
            assert len(events) == 2 and all(isinstance(event, Message) for event in events), events

    @PROFILE
    @given(st.data())
    def test_valid_streams_round_trip_in_any_split(self, data: st.DataObject) -> None:
        raw, sent = data.draw(compressed_stream())
        cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
        events = feed_deflate(raw, cuts, max_message_size=None)
        assert [event.data for event in events if isinstance(event, Message)] == sent
        assert all(isinstance(event, (Message, Ping)) for event in events)

    @PROFILE
    @given(st.one_of(st.text(max_size=2000), st.binary(max_size=2000)), st.integers(0, 9))
    def test_what_the_server_sends_a_client_inflates(self, message: str | bytes, level: int) -> None:
        conn = Connection(extension=codec(DeflateOptions(level=level)))
        inflater = zlib.decompressobj(-15)
        for _ in range(2):
            frame = conn.send_text(message) if isinstance(message, str) else conn.send_binary(message)
            first, opcode, payload, rest = parse_server_frame(frame)
            assert rest == b"" and first & RSV1
            assert opcode == (OP_TEXT if isinstance(message, str) else OP_BINARY)
            data = client_inflate(payload, inflater)
            assert data == (message.encode() if isinstance(message, str) else message)
