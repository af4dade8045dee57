"""Reassembling data messages from their frames (RFC 6455 §5.4), for the ``Connection``.

A fragmented message is kept in one growing buffer — its payload so far,
inflated for a compressed one (RFC 7692 §6) — never as an object per
fragment, so that a flood of 1-byte fragments costs a byte each: the memory a
connection holds stays within about twice the bytes of the message received,
plus a constant. Text is validated as it arrives (§8.1: fail at the first
invalid byte) and decoded once at the end.

:class:`MessageAssembly` is the part of ``Connection`` that does it: its
attributes live in ``Connection``'s slots.
"""

from __future__ import annotations

import codecs
import sys

from takeover.protocol.deflate import PerMessageDeflate
from takeover.protocol.events import Event, Message
from takeover.protocol.frames import OP_TEXT

__all__ = ["MessageAssembly"]

_utf8_decode = codecs.utf_8_decode
#: A run of at least this many bytes of a text message is kept as its text once validated.
_DECODE_BLOCK = 4096
#: The most a str object takes beyond its characters (a non-ASCII one's header).
_STR_HEADER = 80


class MessageAssembly:
    """The message being reassembled from fragments (§5.4): its state and the methods that grow it."""

    __slots__ = (
        "_compressed", "_decoded", "_fragment_opcode", "_fragment_size", "_inflated_size", "_message",
        "_partial", "_valid",
    )

    # Connection's: the codec and the size limit.
    extension: PerMessageDeflate | None
    max_message_size: int | None
    # The opcode of the message being reassembled, or None between messages.
    _fragment_opcode: int | None
    # Its payload so far (inflated, for a compressed one). For text, the UTF-8 bytes,
    # of which the first _valid are known to be valid, after the text already decoded
    # from large runs of them (_decoded; see _check_utf8).
    _message: bytearray
    _valid: int
    _decoded: list[str]
    # Payload bytes of its frames so far (compressed ones, for a compressed message).
    _fragment_size: int
    # It has RSV1 set (RFC 7692 §6), and its inflated size so far.
    _compressed: bool
    _inflated_size: int
    # Payload bytes of the current, incomplete text frame already decoded.
    _partial: int

    def _init_message(self) -> None:
        self._fragment_opcode = None
        self._message = bytearray()
        self._valid = 0
        self._decoded = []
        self._fragment_size = 0
        self._compressed = False
        self._inflated_size = 0
        self._partial = 0


    def _start_fragments(self, opcode: int) -> None:
        self._fragment_opcode = opcode
        self._fragment_size = 0

    def _add_text(self, payload: bytes, events: list[Event], *, final: bool) -> None:
        message = self._message
        message += payload
        self._fragment_size += len(payload)
        if final:
            self._end_text(events)
        elif self._valid + len(payload) == len(message) and payload.isascii():
            self._valid = len(message)  # nothing cut before it and all ASCII: valid as it is
        else:
            self._check_utf8()

    def _check_utf8(self) -> None:
        """Validate the bytes of the text message not checked yet (§8.1).

        Incremental, so that invalid UTF-8 fails the connection at its first
        byte, inside any fragment or partial frame, rather than after the whole
        message (Autobahn 6.4). A character cut at the end stays unchecked
        until the rest of it arrives. The bytes stay in ``_message`` and are
        decoded with the rest at the end; but a large run whose text takes at
        most twice its size (any text without characters above U+FFFF) is kept
        as that text instead, so that large pieces are decoded only once.
        """
        message = self._message
        valid = self._valid
        with memoryview(message) as view:
            with view[valid:] as rest:
                text, used = _utf8_decode(rest, "strict", False)
            if used < _DECODE_BLOCK or sys.getsizeof(text) > 2 * used + _STR_HEADER:
                self._valid = valid + used
                return
            if valid:  # what came before, so that the parts stay in order
                with view[:valid] as head:
                    self._decoded.append(_utf8_decode(head, "strict", True)[0])
        self._decoded.append(text)
        del message[: valid + used]  # leaves only a character cut at the end
        self._valid = 0

    def _end_text(self, events: list[Event]) -> None:
        # What is left is decoded once, which also checks its last bytes (§8.1).
        text = self._message.decode("utf-8")
        decoded = self._decoded
        if decoded:
            decoded.append(text)
            text = "".join(decoded)
        self._end_fragments()
        events.append(Message(text))

    def _end_binary(self, events: list[Event]) -> None:
        data = bytes(self._message)
        self._end_fragments()
        events.append(Message(data))

    def _inflate(self, payload: bytes, final: bool, events: list[Event]) -> None:
        """Inflate a frame of a compressed message; the size limit applies to its output."""
        extension = self.extension
        assert extension is not None
        self._fragment_size += len(payload)  # the compressed size, checked from each header
        limit = self.max_message_size
        inflated = self._inflated_size
        room = None if limit is None else limit - inflated
        if final and not inflated:
            # The whole message in one frame, the usual case: the output is the message, no copy.
            data = extension.decompress(payload, True, room)
            text = self._fragment_opcode == OP_TEXT
            self._end_fragments()
            events.append(Message(data.decode("utf-8") if text else data))
            return
        message = self._message
        size = len(message)
        extension.decompress_into(message, payload, final, room)
        self._inflated_size = inflated + len(message) - size
        if self._fragment_opcode == OP_TEXT:
            if final:
                self._end_text(events)
            elif len(message) > size:
                self._check_utf8()
        elif final:
            self._end_binary(events)

    def _continue_fragments(self, payload: bytes, fin: bool, events: list[Event]) -> None:
        if self._compressed:
            self._inflate(payload, fin, events)
            return
        if self._fragment_opcode == OP_TEXT:
            self._add_text(payload, events, final=fin)
            return
        self._message += payload
        self._fragment_size += len(payload)
        if fin:
            self._end_binary(events)

    def _end_fragments(self) -> None:
        self._fragment_opcode = None
        self._message.clear()  # frees its memory
        self._decoded.clear()
        self._valid = 0
        self._fragment_size = 0
        self._partial = 0
        self._compressed = False
        self._inflated_size = 0
