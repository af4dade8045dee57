"""permessage-deflate (RFC 7692), without I/O: negotiation and the codec.

:func:`negotiate` reads the client's ``Sec-WebSocket-Extensions`` offers (as
:attr:`~takeover.protocol.handshake.Handshake.extensions` holds them), accepts
the first ``permessage-deflate`` offer it can honour under the server's
:class:`DeflateOptions`, and returns a :class:`PerMessageDeflate`: the
agreed :class:`DeflateParameters`, the response header value, and the codec
that :class:`~takeover.protocol.connection.Connection` uses for the messages
with RSV1 set.

Decompression is bounded: a payload is inflated in chunks of at most
:data:`INFLATE_CHUNK` bytes, fed at most :data:`FEED_CHUNK` compressed bytes
at a time, and :exc:`MessageTooBig` is raised as soon as the output passes
the size allowed, so a few kilobytes that inflate to gigabytes cost no more
memory than the message size limit.

zlib state is created when first needed; a side without context takeover
gets a fresh one for each message and keeps none between messages.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from takeover.protocol.errors import HandshakeError
from takeover.protocol.handshake import parse_extension

__all__ = [
    "DEFAULT_THRESHOLD",
    "EXTENSION_NAME",
    "FEED_CHUNK",
    "INFLATE_CHUNK",
    "DeflateError",
    "DeflateOptions",
    "DeflateParameters",
    "MessageTooBig",
    "PerMessageDeflate",
    "accept_offer",
    "negotiate",
]

EXTENSION_NAME = "permessage-deflate"
#: The threshold without context takeover when none is set (``ws``'s).
DEFAULT_THRESHOLD = 1024
#: RFC 7692 §7.2.2: the tail a sender removes from each message, appended again before inflating.
_TAIL = b"\x00\x00\xff\xff"
#: At most this many inflated bytes come out of zlib at a time.
INFLATE_CHUNK = 256 * 1024
#: At most this many compressed bytes go into zlib at a time (so that
#: ``unconsumed_tail``, a copy of the input left over, stays small).
FEED_CHUNK = 64 * 1024
# RFC 7692 §7.1.2: window sizes are decimal integers from 8 to 15, without leading zeros.
_WINDOW_BITS = {str(bits): bits for bits in range(8, 16)}


class DeflateError(ValueError):
    """The compressed data of a message is not valid DEFLATE data."""


class MessageTooBig(ValueError):
    """A message inflates to more than the size allowed."""


@dataclass(frozen=True)
class DeflateOptions:
    """The server's permessage-deflate settings (``compression=DeflateOptions(...)``).

    ``compression="deflate"`` means ``DeflateOptions()``: zlib's defaults
    (level 6, a 32 KiB window, ``mem_level`` 8) and ``ws``'s threshold.

    * ``level``: zlib's compression level, 0 (none) to 9 (best), or -1 for
      zlib's default (6).
    * ``threshold``: messages whose payload is smaller than this many bytes
      are sent uncompressed; 0 compresses every message. The default, None,
      is ``ws``'s rule: 1024 bytes when the server compresses without context
      takeover, and every message with it (a small message compresses well
      against the ones before it).
    * ``mem_level``: zlib's ``memLevel``, 1 to 9; lower saves memory (the
      compressor takes about ``2 ** (server_max_window_bits + 2) + 2 **
      (mem_level + 9)`` bytes) at some cost in ratio. It is capped at the
      window's bits minus 4 (a small window slides its hash table often).
    * ``server_max_window_bits``: the largest LZ77 window (8 to 15, as a
      power of two) the server compresses with; a client may ask for less.
      Below 15 it is announced in the response.
    * ``client_max_window_bits``: ask the client to compress with at most this
      window (8 to 15), when its offer says it supports the parameter; the
      server then inflates with that window too.
    * ``server_no_context_takeover``: compress every message on its own (no
      compressor kept between messages; ratio drops on small messages).
    * ``client_no_context_takeover``: ask the client to compress every
      message on its own (no decompressor kept between messages).
    """

    level: int = zlib.Z_DEFAULT_COMPRESSION
    threshold: int | None = None
    mem_level: int = 8
    server_max_window_bits: int = 15
    client_max_window_bits: int | None = None
    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.level, int) or not -1 <= self.level <= 9:
            raise ValueError(f"level must be -1 (zlib's default) or 0 to 9, not {self.level!r}")
        threshold = self.threshold
        if threshold is not None and (not isinstance(threshold, int) or threshold < 0):
            raise ValueError(f"threshold must be a number of bytes >= 0 or None, not {threshold!r}")
        if not isinstance(self.mem_level, int) or not 1 <= self.mem_level <= 9:
            raise ValueError(f"mem_level must be 1 to 9, not {self.mem_level!r}")
        if not isinstance(self.server_max_window_bits, int) or not 8 <= self.server_max_window_bits <= 15:
            raise ValueError(
                f"server_max_window_bits must be 8 to 15, not {self.server_max_window_bits!r}"
            )
        client_bits = self.client_max_window_bits
        if client_bits is not None and (not isinstance(client_bits, int) or not 8 <= client_bits <= 15):
            raise ValueError(f"client_max_window_bits must be 8 to 15 or None, not {client_bits!r}")


@dataclass(frozen=True)
class DeflateParameters:
    """The permessage-deflate configuration agreed on, as the response states it.

    A window of ``None`` is not in the response: that side may use up to 15 bits.
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None
    client_max_window_bits: int | None = None

    def response(self) -> str:
        """The ``Sec-WebSocket-Extensions`` value of the 101 response (RFC 7692 §7.1)."""
        parts = [EXTENSION_NAME]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_max_window_bits is not None:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if self.client_max_window_bits is not None:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)


def accept_offer(params: Iterable[tuple[str, str | None]], options: DeflateOptions) -> DeflateParameters:
    """The response to one ``permessage-deflate`` offer, or :class:`ValueError` to decline it.

    RFC 7692 §7.1: an offer is declined when a parameter is unknown, repeated
    or has an invalid value. Every valid offer can be honoured:

    * ``server_no_context_takeover`` is granted (and added when the options ask for it);
    * ``server_max_window_bits=N`` is answered with ``min(N, options.server_max_window_bits)``.
      zlib cannot compress raw DEFLATE with a 256-byte window (8 bits), so for
      8 the compressor uses 9 bits: zlib never emits a distance over its window
      minus 262 bytes, 250 for 9 bits, which a 256-byte window inflates (this
      is how zlib treated 8 before 1.2.9, and what Node's zlib does for ``ws``);
    * ``client_max_window_bits`` (with or without a value) lets the server ask
      for ``options.client_max_window_bits``, or for the value offered, whichever
      is smaller; without it in the offer, the response must not carry it
      (§7.1.2.2) and the client may use 15 bits;
    * ``client_no_context_takeover`` is answered only when the options ask for it
      (§7.1.1.2 lets the server add it to any response).
    """
    seen: set[str] = set()
    server_no_context_takeover = options.server_no_context_takeover
    client_no_context_takeover = options.client_no_context_takeover
    server_bits: int | None = None
    client_bits: int | None = None
    client_bits_offered = False
    for name, value in params:
        if name in seen:
            raise ValueError(f"repeated parameter {name}")
        seen.add(name)
        if name in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not None:
                raise ValueError(f"{name} takes no value")
            if name == "server_no_context_takeover":
                server_no_context_takeover = True
        elif name == "server_max_window_bits":
            if value not in _WINDOW_BITS:
                raise ValueError(f"invalid server_max_window_bits {value!r}: 8 to 15")
            server_bits = _WINDOW_BITS[value]
        elif name == "client_max_window_bits":
            client_bits_offered = True
            if value is not None:
                if value not in _WINDOW_BITS:
                    raise ValueError(f"invalid client_max_window_bits {value!r}: 8 to 15")
                client_bits = _WINDOW_BITS[value]
        else:
            raise ValueError(f"unknown parameter {name}")

    ours = options.server_max_window_bits
    if server_bits is not None:
        server_bits = min(server_bits, ours)
    elif ours < 15:
        server_bits = ours  # §7.1.2.1: the server may announce a smaller window unasked
    if client_bits_offered and options.client_max_window_bits is not None:
        client_bits = min(client_bits or 15, options.client_max_window_bits)
    return DeflateParameters(
        server_no_context_takeover=server_no_context_takeover,
        client_no_context_takeover=client_no_context_takeover,
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
    )


def negotiate(offers: Iterable[str], options: DeflateOptions) -> PerMessageDeflate | None:
    """Accept the first acceptable ``permessage-deflate`` offer of ``offers``.

    ``offers`` is :attr:`Handshake.extensions <takeover.protocol.handshake.Handshake.extensions>`.
    Returns None when the client offers none that can be accepted (the
    connection goes on uncompressed). Other extensions are ignored. An offer
    that breaks the grammar of RFC 6455 §9.1 makes the whole header invalid:
    :class:`~takeover.errors.HandshakeError` with status 400 (§4.2.1).
    """
    chosen: PerMessageDeflate | None = None
    for text in offers:
        try:
            offer = parse_extension(text)
        except ValueError as error:
            raise HandshakeError(f"Invalid Sec-WebSocket-Extensions header: {error}") from None
        if chosen is not None or offer.name != EXTENSION_NAME:
            continue  # every offer is still checked for syntax
        try:
            chosen = PerMessageDeflate(accept_offer(offer.params, options), options)
        except ValueError:
            continue  # RFC 7692 §7.1: decline this offer; a later one may do
    return chosen


class PerMessageDeflate:
    """One connection's permessage-deflate codec, server side (RFC 7692 §7.2).

    :meth:`compress` turns a message's payload into the payload of a frame
    with RSV1 set; :meth:`decompress` inflates the payloads of a compressed
    message's frames in order. zlib objects are made on first use.
    """

    __slots__ = (
        "_deflate_bits",
        "_deflater",
        "_inflate_bits",
        "_inflater",
        "_level",
        "_mem_level",
        "_reset_deflater",
        "_reset_inflater",
        "params",
        "response",
        "threshold",
    )

    def __init__(self, params: DeflateParameters, options: DeflateOptions | None = None) -> None:
        options = options or DeflateOptions()
        #: The agreed parameters.
        self.params = params
        #: The ``Sec-WebSocket-Extensions`` value of the 101 response.
        self.response = params.response()
        threshold = options.threshold
        if threshold is None:
            threshold = DEFAULT_THRESHOLD if params.server_no_context_takeover else 0
        #: Payloads under this many bytes are sent uncompressed.
        self.threshold = threshold
        self._level = options.level
        # zlib refuses 8 bits for raw DEFLATE; 9 keeps distances within 250 bytes (see accept_offer).
        self._deflate_bits = max(params.server_max_window_bits or 15, 9)
        # zlib's hash table (2 ** (mem_level + 7) entries) is slid with the window: far
        # larger than the window it costs time for little (at 9 bits, mem_level 8 is 6x
        # slower than 5 for 1% in ratio), so mem_level is capped at the window bits - 4.
        self._mem_level = min(options.mem_level, self._deflate_bits - 4)
        self._inflate_bits = params.client_max_window_bits or 15
        self._reset_deflater = params.server_no_context_takeover
        self._reset_inflater = params.client_no_context_takeover
        self._deflater: zlib._Compress | None = None
        self._inflater: zlib._Decompress | None = None

    @property
    def shared_key(self) -> tuple[int, int, int] | None:
        """What a compressed payload depends on, when it depends on nothing else.

        Without server context takeover each message is compressed on its own,
        so connections with equal keys get the same bytes (:func:`takeover.broadcast`
        compresses once for all of them); None otherwise.
        """
        if not self._reset_deflater:
            return None
        return (self._level, self._deflate_bits, self._mem_level)

    def compress(self, data: bytes) -> bytes:
        """The compressed payload of a message (RFC 7692 §7.2.1): DEFLATE, sync-flushed, tail removed."""
        deflater = self._deflater
        if deflater is None:
            deflater = zlib.compressobj(self._level, zlib.DEFLATED, -self._deflate_bits, self._mem_level)
            if not self._reset_deflater:
                self._deflater = deflater
        body = deflater.compress(data)
        flushed = deflater.flush(zlib.Z_SYNC_FLUSH)
        # A sync flush ends with the empty stored block 00 00 ff ff, all of it in the flush.
        if body:
            return body + flushed[:-4]
        return flushed[:-4]

    def decompress(self, data: bytes, final: bool, max_size: int | None = None) -> bytes:
        """Inflate one frame's payload of a compressed message (RFC 7692 §7.2.2).

        ``final`` is the frame's FIN bit: the 00 00 ff ff tail is appended
        after its payload. Raises :exc:`MessageTooBig` as soon as more than
        ``max_size`` bytes come out (None: no limit), and :exc:`DeflateError`
        for invalid data.
        """
        chunks: list[bytes] = []
        self._inflate(data, final, max_size, chunks.append)
        if len(chunks) == 1:
            return chunks[0]  # a small message: no copy
        return b"".join(chunks)

    def decompress_into(
        self, out: bytearray, data: bytes, final: bool, max_size: int | None = None
    ) -> None:
        """Like :meth:`decompress`, appending the output to ``out``: how a fragmented message
        is reassembled in one buffer. ``max_size`` counts only what this call adds."""
        self._inflate(data, final, max_size, out.extend)

    def _inflate(
        self, data: bytes, final: bool, max_size: int | None, sink: Callable[[bytes], object]
    ) -> None:
        """Inflate ``data`` in bounded chunks, handing each to ``sink``."""
        inflater = self._inflater
        if inflater is None:
            inflater = self._inflater = zlib.decompressobj(-self._inflate_bits)
        size = 0
        view = memoryview(data)
        pieces = [view[start : start + FEED_CHUNK] for start in range(0, len(view), FEED_CHUNK)]
        if final:
            pieces.append(memoryview(_TAIL))
        try:
            for piece in pieces:
                if inflater.eof:
                    break  # a block with BFINAL set ended the stream; the rest is padding
                feed: bytes | memoryview = piece
                while True:
                    want = INFLATE_CHUNK if max_size is None else min(INFLATE_CHUNK, max_size - size + 1)
                    chunk = inflater.decompress(feed, want)
                    if chunk:
                        size += len(chunk)
                        if max_size is not None and size > max_size:
                            raise MessageTooBig(f"Message inflates to over {max_size} bytes")
                        sink(chunk)
                    feed = inflater.unconsumed_tail
                    # Done with this piece once its input is used and zlib did not
                    # fill the output (a full output may mean more is pending).
                    if (not feed and len(chunk) < want) or inflater.eof:
                        break
        except MessageTooBig:
            self._inflater = None
            raise
        except zlib.error as error:
            invalid = f"Invalid compressed data: {error}"
        else:
            invalid = ""
        if invalid:  # raised here, so that it holds no zlib.error (and its frame) as __context__
            self._inflater = None
            raise DeflateError(invalid)
        if final and (self._reset_inflater or inflater.eof):
            self._inflater = None  # the next message starts a new stream

    def close(self) -> None:
        """Drop the zlib state (the connection is over)."""
        self._deflater = None
        self._inflater = None
