"""Memory held while a fragmented message is reassembled (RFC 6455 §5.4), measured with tracemalloc.

A client may send a message as any number of fragments, down to one payload
byte each (7 bytes on the wire). Whatever the fragmentation, a
:class:`~takeover.protocol.connection.Connection` must hold no more than about
twice the message bytes received so far plus a constant: one growing buffer
per message, never an object per fragment. The flood ends, as any message
does, in 1009 at ``max_message_size`` (§7.4.1).
"""

from __future__ import annotations

import random
import tracemalloc
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from takeover.protocol.connection import Connection, Failure, Message
from takeover.protocol.deflate import DeflateParameters, PerMessageDeflate
from takeover.protocol.frames import OP_BINARY, OP_CONT, OP_TEXT, RSV1
from tests.frames import client_frame

#: What a Connection may hold besides the message: its partial-frame buffer, the
#: objects of one receive_data call, the zlib windows of permessage-deflate.
CONSTANT = 256 * 1024
#: The I/O layer reads at most this much at a time (transport.py's recv size).
READ_SIZE = 64 * 1024


@dataclass
class Figures:
    """What a flood cost: message bytes received, memory held after the last read, and the peak."""

    received: int
    held: int
    peak: int
    baseline: int  # traced memory before the first read

    def __str__(self) -> str:
        return (
            f"{self.received:,} message bytes: held {self.held:,} B ({self.held / self.received:.2f}/B),"
            f" peak {self.peak:,} B"
        )


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def reads(frames: bytes) -> Iterator[bytes]:
    """``frames`` in pieces of READ_SIZE, cut anywhere (inside headers too), as a socket gives them."""
    for start in range(0, len(frames), READ_SIZE):
        yield frames[start : start + READ_SIZE]


def flood(conn: Connection, wire: bytes, message_bytes: int) -> Figures:
    """Feed ``wire`` in reads; no event may come out; return what the Connection held.

    The figures are measured from just before the first read, so they count
    the Connection's buffers and nothing the test built beforehand.
    """
    baseline, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    held = 0
    for data in reads(wire):
        assert conn.receive_data(data) == []
        current, _ = tracemalloc.get_traced_memory()
        held = max(held, current - baseline)
    _, peak = tracemalloc.get_traced_memory()
    return Figures(message_bytes, held, peak - baseline, baseline)


def assert_bounded(figures: Figures) -> None:
    assert figures.held <= 2 * figures.received + CONSTANT, figures
    # Transient copies are bounded too: the read being parsed and one payload's unmasked copy.
    assert figures.peak <= 2 * figures.received + 2 * READ_SIZE + CONSTANT, figures


FRAGMENTS = 200_000
#: Fewer for the slower cases (tracemalloc costs ~20 µs a frame); the old code failed each by 3-20x.
SOME_FRAGMENTS = 60_000


class TestSection5_4OneByteFragments:
    """§5.4: "a message MAY be fragmented into any number of fragments"; each costs one byte held."""

    def test_binary(self, traced: None) -> None:
        conn = Connection()
        assert conn.receive_data(client_frame(OP_BINARY, b"\x00", fin=False)) == []
        wire = client_frame(OP_CONT, b"\xab", fin=False) * FRAGMENTS
        figures = flood(conn, wire, 1 + FRAGMENTS)
        assert_bounded(figures)
        (message,) = conn.receive_data(client_frame(OP_CONT, b"\xcd"))
        assert message == Message(b"\x00" + b"\xab" * FRAGMENTS + b"\xcd")

    def test_ascii_text(self, traced: None) -> None:
        conn = Connection()
        assert conn.receive_data(client_frame(OP_TEXT, b"<", fin=False)) == []
        wire = client_frame(OP_CONT, b"a", fin=False) * FRAGMENTS
        figures = flood(conn, wire, 1 + FRAGMENTS)
        assert_bounded(figures)
        assert conn.receive_data(client_frame(OP_CONT, b">")) == [Message("<" + "a" * FRAGMENTS + ">")]

    @pytest.mark.parametrize("char", ["é", "€", "🎉"], ids=["2-byte", "3-byte", "4-byte"])
    def test_multibyte_text_split_across_fragments(self, traced: None, char: str) -> None:
        # Every character is cut into its bytes, one per fragment (§8.1: only the
        # whole message must be valid UTF-8).
        encoded = char.encode("utf-8")
        count = SOME_FRAGMENTS // len(encoded)
        conn = Connection()
        assert conn.receive_data(client_frame(OP_TEXT, b"", fin=False)) == []
        wire = b"".join(client_frame(OP_CONT, bytes((byte,)), fin=False) for byte in encoded) * count
        figures = flood(conn, wire, count * len(encoded))
        assert_bounded(figures)
        assert conn.receive_data(client_frame(OP_CONT, b"")) == [Message(char * count)]

    @pytest.mark.parametrize("char", ["€", "🎉"], ids=["BMP", "astral"])
    def test_large_fragments_of_mostly_ascii_text(self, traced: None, char: str) -> None:
        # Large runs may be held as text (decoded once): one character above U+00FF makes
        # a str of 2 bytes a character, which is allowed; one above U+FFFF, 4, which is not.
        piece = ("a" * 8000 + char).encode()
        count = 60
        conn = Connection()
        assert conn.receive_data(client_frame(OP_TEXT, piece, fin=False)) == []
        figures = flood(conn, client_frame(OP_CONT, piece, fin=False) * count, (count + 1) * len(piece))
        assert_bounded(figures)
        (message,) = conn.receive_data(client_frame(OP_CONT, b""))
        assert message == Message(piece.decode() * (count + 1))

    def test_invalid_utf8_still_fails_at_the_first_bad_byte(self, traced: None) -> None:
        # §8.1 and Autobahn 6.4.x: validation is incremental, not deferred to the end.
        conn = Connection()
        conn.receive_data(client_frame(OP_TEXT, b"a", fin=False))
        flood(conn, client_frame(OP_CONT, b"\xe2", fin=False) + client_frame(OP_CONT, b"\x82", fin=False), 3)
        (failure,) = conn.receive_data(client_frame(OP_CONT, b"x", fin=False))
        assert isinstance(failure, Failure) and failure.code == 1007

    def test_a_frame_arriving_byte_by_byte(self, traced: None) -> None:
        # One text frame in 1-byte reads (Autobahn 6.4.3's pieces): its payload is
        # validated as it comes and held once more beside the wire bytes, never per read.
        size = 20_000
        payload = ("€" * (size // 3)).encode()
        conn = Connection()
        wire = client_frame(OP_TEXT, payload)
        baseline, _ = tracemalloc.get_traced_memory()
        for index in range(len(wire) - 1):
            assert conn.receive_data(wire[index : index + 1]) == []
        held = tracemalloc.get_traced_memory()[0] - baseline
        assert held <= 2 * len(wire) + CONSTANT, held
        assert conn.receive_data(wire[-1:]) == [Message(payload.decode())]


def deflate_codec() -> PerMessageDeflate:
    return PerMessageDeflate(DeflateParameters())


def client_compress(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    compressed = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert compressed.endswith(b"\x00\x00\xff\xff")
    return compressed[:-4]  # RFC 7692 §7.2.1


class TestRfc7692CompressedFragments:
    """RFC 7692 §6.1: a compressed message may be fragmented like any other; its output is held once."""

    @pytest.mark.parametrize("opcode", [OP_BINARY, OP_TEXT])
    def test_one_byte_fragments_of_a_compressed_message(self, traced: None, opcode: int) -> None:
        rng = random.Random(7692)
        letters = b"abcdefghijklmnopqrstuvwxyz"
        words = [bytes(rng.choices(letters, k=rng.randrange(2, 9))) for _ in range(5000)]
        data = b" ".join(rng.choice(words) for _ in range(12_000))  # 3x smaller compressed
        payload = client_compress(data)
        conn = Connection(extension=deflate_codec())
        assert conn.receive_data(client_frame(opcode, payload[:1], fin=False, rsv=RSV1)) == []
        wire = b"".join(client_frame(OP_CONT, payload[i : i + 1], fin=False) for i in range(1, len(payload)))
        figures = flood(conn, wire, len(data))
        assert_bounded(figures)
        (message,) = conn.receive_data(client_frame(OP_CONT, b""))
        assert message == Message(data.decode() if opcode == OP_TEXT else data)


class TestSection7_4_1FloodEndsIn1009:
    LIMIT = 100_000

    @pytest.mark.parametrize("opcode", [OP_BINARY, OP_TEXT])
    def test_one_byte_fragments_past_the_limit(self, traced: None, opcode: int) -> None:
        conn = Connection(max_message_size=self.LIMIT)
        conn.receive_data(client_frame(opcode, b"a", fin=False))
        under = client_frame(OP_CONT, b"a", fin=False) * (self.LIMIT - 1)
        figures = flood(conn, under, self.LIMIT)
        assert_bounded(figures)
        (failure,) = conn.receive_data(client_frame(OP_CONT, b"a", fin=False))
        assert isinstance(failure, Failure) and failure.code == 1009
        assert failure.reason == f"Message of {self.LIMIT + 1} bytes is over the limit of {self.LIMIT}"
        # The failed message is dropped with the failure (§7.1.7: nothing more is processed).
        assert tracemalloc.get_traced_memory()[0] - figures.baseline < CONSTANT

    def test_compressed_fragments_past_the_inflated_limit(self, traced: None) -> None:
        data = b"z" * (self.LIMIT * 20)  # a few hundred bytes compressed
        payload = client_compress(data)
        conn = Connection(max_message_size=self.LIMIT, extension=deflate_codec())
        events = conn.receive_data(client_frame(OP_BINARY, payload[:1], fin=False, rsv=RSV1))
        for i in range(1, len(payload)):
            events += conn.receive_data(client_frame(OP_CONT, payload[i : i + 1], fin=False))
            if events:
                break
        (failure,) = events
        assert isinstance(failure, Failure) and failure.code == 1009
