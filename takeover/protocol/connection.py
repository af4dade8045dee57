"""The server side of an open WebSocket connection, without I/O (RFC 6455 §5–§7).

:class:`Connection` takes the bytes read from the client and gives back events,
and turns what the application sends into bytes to write. It never reads or
writes a socket and never raises at the caller because of what the peer sent:
every remote protocol violation ends in :meth:`Connection._fail`, which queues
the close frame with the RFC code (1002, 1007, 1009, or 1011 for a bug of ours)
and reports a :class:`Failure` event carrying the original exception for logs.

State machine (RFC 6455 §7)::

    OPEN    --send_close-->      CLOSING   (our close frame is queued)
    OPEN    --close received-->  CLOSED    (our echo of it is queued)
    CLOSING --close received-->  CLOSED
    any     --violation-->       CLOSED    (a close frame with the code is queued)

After CLOSED, received bytes are discarded; the I/O layer closes the TCP
connection once the queued bytes are written (§7.1.1: the server closes first).
"""

from __future__ import annotations

import codecs
import enum
import sys
from typing import NamedTuple

from takeover.errors import InvalidStateError
from takeover.protocol.deflate import DeflateError, MessageTooBig, PerMessageDeflate
from takeover.protocol.errors import ProtocolViolation
from takeover.protocol.frames import (
    MAX_CLOSE_REASON,
    MAX_CONTROL_PAYLOAD,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RSV1,
    CloseCode,
    HeaderFields,
    decode_header_fields,
    encode_close,
    encode_frame,
    is_valid_close_code,
)
from takeover.protocol.mask import apply_mask

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "Close",
    "Connection",
    "Event",
    "Failure",
    "Message",
    "Ping",
    "Pong",
    "State",
]

#: Deno's cap on a message, and our default (``ws`` uses 100 MiB).
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024


class State(enum.IntEnum):
    """Connection states, numbered as the DOM's ``readyState``."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


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
    """We failed the connection (§7.1.7) with ``code``; ``cause`` is for logs."""

    code: int
    reason: str
    cause: BaseException | None


Event = Message | Ping | Pong | Close | Failure


def _rotate(mask: bytearray | bytes, offset: int) -> bytes:
    """The masking key as seen from ``offset`` bytes into the payload (§5.3)."""
    shift = offset & 3
    return bytes(mask[shift:] + mask[:shift])


def _violation(reason: str, code: int = CloseCode.PROTOCOL_ERROR) -> ProtocolViolation:
    return ProtocolViolation(code, reason)


# State as data: (state, what happened) -> next state.
_TRANSITIONS: dict[tuple[State, str], State] = {
    (State.OPEN, "send_close"): State.CLOSING,
    (State.OPEN, "close_received"): State.CLOSED,
    (State.CLOSING, "close_received"): State.CLOSED,
    (State.OPEN, "fail"): State.CLOSED,
    (State.CLOSING, "fail"): State.CLOSED,
}

_utf8_decode = codecs.utf_8_decode
#: A run of at least this many bytes of a text message is kept as its text once validated.
_DECODE_BLOCK = 4096
#: The most a str object takes beyond its characters (a non-ASCII one's header).
_STR_HEADER = 80


class Connection:
    """An open server-side WebSocket connection (sans-I/O).

    ``trailing_data`` is the bytes already read past the handshake (Node's
    ``head``); they are parsed before anything passed to :meth:`receive_data`.
    Bytes to write accumulate until :meth:`data_to_send`: pongs, the close echo
    and the failure close. ``send_*`` methods return their frame's bytes.

    ``extension`` is the permessage-deflate codec negotiated in the handshake
    (:func:`takeover.protocol.deflate.negotiate`), if any. Then RSV1 marks a
    compressed message on its first frame (RFC 7692 §6), ``max_message_size``
    bounds both the compressed bytes and the inflated size, and text and
    binary messages from ``send_*`` are compressed from ``extension.threshold``
    bytes on.
    """

    __slots__ = (
        "_buffer", "_close_out", "_compressed", "_decoded", "_fragment_opcode", "_fragment_size",
        "_frame_end", "_inflated_size", "_message", "_out", "_partial", "_skip", "_valid", "close",
        "close_received", "close_sent", "extension", "failure", "max_message_size", "state",
    )

    def __init__(
        self,
        *,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        trailing_data: bytes = b"",
        extension: PerMessageDeflate | None = None,
    ) -> None:
        self.max_message_size = max_message_size if max_message_size else None
        #: The permessage-deflate codec, or None when no compression was negotiated.
        self.extension = extension
        self.state = State.OPEN
        self.close_sent = False
        self._close_out = False  # our close frame has left through send_close or data_to_send
        self.close_received = False
        #: The close frame we received, once we have.
        self.close: Close | None = None
        #: Why we failed the connection, if we did.
        self.failure: Failure | None = None
        self._buffer = bytearray(trailing_data)
        self._out = bytearray()
        # The message being reassembled from fragments (§5.4): its payload so far in one
        # growing buffer (inflated, for a compressed one), never an object per fragment,
        # so that a flood of 1-byte fragments costs a byte each. For text, the UTF-8
        # bytes, of which the first _valid are known to be valid, after the text already
        # decoded from large runs of them (see _check_utf8).
        self._fragment_opcode: int | None = None
        self._message = bytearray()
        self._valid = 0
        self._decoded: list[str] = []
        # Payload bytes of the message's frames so far (compressed ones, for a compressed
        # message), against max_message_size from each frame's header.
        self._fragment_size = 0
        # The message being reassembled has RSV1 set (RFC 7692 §6), and its inflated size so far.
        self._compressed = False
        self._inflated_size = 0
        # After a failure: the end of the failed frame, and bytes still to skip.
        self._frame_end = -1
        self._skip = 0
        # Payload bytes of the current, incomplete text frame already decoded.
        self._partial = 0

    # -- input ------------------------------------------------------------

    def receive_data(self, data: bytes = b"") -> list[Event]:
        """Feed bytes read from the client; return the events they complete."""
        if self.state is State.CLOSED:
            # §7.1.1: nothing after the close handshake is read. After a
            # failure, frames are only skipped until the peer's close arrives.
            if self.failure is not None and not self.close_received:
                self._skip_to_close(data)
            return []
        buffer = self._buffer
        events: list[Event] = []
        try:
            if not buffer and len(data) > 5:
                message = self._single_frame(data)
                if message is not None:
                    return [message]
            if data:
                buffer += data
            consumed = self._parse(buffer, events)
        except ProtocolViolation as violation:
            self._fail(violation.code, violation.reason, violation, events)
            return events
        except UnicodeDecodeError as error:
            self._fail(CloseCode.INVALID_DATA, "Invalid UTF-8 in text message", error, events)
            return events
        except MessageTooBig as error:
            # Without its traceback: its frames hold the output inflated so far.
            reason = f"Message inflates to over the limit of {self.max_message_size} bytes"
            self._fail(CloseCode.TOO_BIG, reason, error.with_traceback(None), events)
            return events
        except DeflateError as error:  # as ws: the data, not the framing, is wrong
            self._fail(CloseCode.INVALID_DATA, "Invalid compressed data", error.with_traceback(None), events)
            return events
        except Exception as error:  # a bug of ours: close with 1011 and no details (§7.4.1)
            self._fail(CloseCode.INTERNAL_ERROR, "Internal error", error, events)
            return events
        if consumed:
            del buffer[:consumed]
        return events

    def _single_frame(self, data: bytes) -> Message | None:
        """Fast path: ``data`` is exactly one whole, small, unfragmented data frame.

        That is the usual read of a chatty connection. Anything else, including
        any error, returns None and goes the general way, which reports it.
        """
        second = data[1]
        length = second & 0x7F
        if not second & 0x80 or length > 125 or len(data) != length + 6:
            return None
        first = data[0]
        if (first != 0x81 and first != 0x82) or self._fragment_opcode is not None:
            return None  # only FIN, no RSV bits, text or binary (§5.2)
        limit = self.max_message_size
        if limit is not None and length > limit:
            return None
        payload = apply_mask(data[6:], data[2:6])
        if first == 0x82:
            return Message(payload)
        try:
            return Message(payload.decode("utf-8"))
        except UnicodeDecodeError:
            return None

    def _parse(self, buffer: bytearray, events: list[Event]) -> int:
        """Parse every complete frame in ``buffer``; return how many bytes were used."""
        pos = 0
        end = len(buffer)
        decode = decode_header_fields
        unmask = apply_mask
        while end - pos >= 2 and self.state is not State.CLOSED:
            self._frame_end = -1
            header = decode(buffer, pos)
            if header is None:
                break
            fin, rsv, opcode, masked, length, size = header
            start = pos + size
            # Where this frame ends, so that after a failure the peer's close can be found.
            self._frame_end = start + length
            done = self._partial
            if not done:
                self._check_header(fin, rsv, opcode, masked, length)
            if end - start < length:
                if end > start + done and self._is_text(opcode, rsv):
                    self._decode_partial(opcode, buffer, start, end)
                break
            pos = start + length
            if done:
                # The start of this text frame was decoded as it arrived.
                self._partial = 0
                rest = apply_mask(buffer[start + done : pos], _rotate(buffer[start - 4 : start], done))
                self._add_text(rest, events, final=fin)
                continue
            payload = unmask(buffer[start:pos], buffer[start - 4 : start])
            self._on_frame(header, payload, events)
        return pos

    def _is_text(self, opcode: int, rsv: int) -> bool:
        """Whether the frame is uncompressed text, which is decoded as it arrives."""
        if opcode == OP_TEXT:
            return not rsv
        return opcode == OP_CONT and self._fragment_opcode == OP_TEXT and not self._compressed

    def _decode_partial(self, opcode: int, buffer: bytearray, start: int, end: int) -> None:
        """Validate the part of a text frame received so far (§8.1: fail fast).

        Autobahn 6.4.3/6.4.4 send one frame in pieces; invalid UTF-8 in an
        early piece must close the connection before the rest arrives.
        """
        done = self._partial
        if not done and opcode == OP_TEXT:
            self._start_fragments(OP_TEXT)
        chunk = apply_mask(buffer[start + done : end], _rotate(buffer[start - 4 : start], done))
        self._add_text(chunk, [], final=False)
        self._partial = end - start

    def _skip_to_close(self, data: bytes) -> None:
        """After a failure, skip whole frames until the peer's close frame (§7.1.7)."""
        buffer = self._buffer
        if self._skip >= len(data):
            self._skip -= len(data)
            return
        buffer += data[self._skip :]
        self._skip = 0
        pos = 0
        try:
            while (header := decode_header_fields(buffer, pos)) is not None:
                _, _, opcode, _, length, size = header
                if opcode == OP_CLOSE:
                    self.close_received = True
                    buffer.clear()
                    return
                pos += size + length
                if pos > len(buffer):
                    self._skip = pos - len(buffer)
                    buffer.clear()
                    return
        except ProtocolViolation:
            # Not a frame: the boundaries are lost, so the peer's close cannot be found.
            buffer.clear()
            self._skip = 1 << 64
            return
        del buffer[:pos]

    def _check_header(self, fin: bool, rsv: int, opcode: int, masked: bool, length: int) -> None:
        """Checks that need only the header, so a bad frame fails before its payload arrives."""
        if not masked:
            raise _violation("Client frames must be masked")  # §5.1
        if rsv:
            if rsv != RSV1 or self.extension is None:
                raise _violation("Reserved bits must be 0 without a negotiated extension")  # §5.2
            if opcode == OP_CONT or opcode >= OP_CLOSE:
                # RFC 7692 §6.1: RSV1 only on the first frame of a data message.
                raise _violation("RSV1 set on a control or continuation frame")
        if opcode >= OP_CLOSE:
            if opcode > OP_PONG:
                raise _violation(f"Reserved opcode {opcode:#x}")
            if length > MAX_CONTROL_PAYLOAD:
                raise _violation("Control frame payload over 125 bytes")  # §5.5
            if not fin:
                raise _violation("Fragmented control frame")  # §5.5
            return
        if opcode > OP_BINARY:
            raise _violation(f"Reserved opcode {opcode:#x}")
        if opcode == OP_CONT:
            if self._fragment_opcode is None:
                raise _violation("Continuation frame without a message to continue")  # §5.4
            size = self._fragment_size + length
        else:
            if self._fragment_opcode is not None:
                raise _violation("New data frame before the fragmented message ended")  # §5.4
            size = length
        limit = self.max_message_size
        if limit is not None and size > limit:
            raise _violation(
                f"Message of {size} bytes is over the limit of {limit}", CloseCode.TOO_BIG
            )

    def _on_frame(self, header: HeaderFields, payload: bytes, events: list[Event]) -> None:
        fin, rsv, opcode, _, _, _ = header
        if rsv:  # the first frame of a compressed message (checked in _check_header)
            self._start_fragments(opcode)
            self._compressed = True
            self._inflate(payload, fin, events)
        elif opcode == OP_TEXT:
            if fin:
                events.append(Message(payload.decode("utf-8")))
            else:
                self._start_fragments(opcode)
                self._add_text(payload, events, final=False)
        elif opcode == OP_BINARY:
            if fin:
                events.append(Message(payload))
            else:
                self._start_fragments(opcode)
                self._message += payload
                self._fragment_size = len(payload)
        elif opcode == OP_CONT:
            self._continue_fragments(payload, fin, events)
        elif opcode == OP_PING:
            self._out += encode_frame(OP_PONG, payload)  # §5.5.2: answer with the same payload
            events.append(Ping(payload))
        elif opcode == OP_PONG:
            events.append(Pong(payload))
        else:
            self._on_close(payload, events)

    # -- fragmented messages (§5.4) ---------------------------------------

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

    # -- closing (§5.5.1, §7) ---------------------------------------------

    def _on_close(self, payload: bytes, events: list[Event]) -> None:
        if len(payload) == 1:
            raise _violation("Close frame payload of 1 byte")  # §5.5.1: 0 or at least 2
        if payload:
            code = int.from_bytes(payload[:2], "big")
            if not is_valid_close_code(code):
                raise _violation(f"Invalid close code {code}")  # §7.4
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                raise _violation("Invalid UTF-8 in close reason", CloseCode.INVALID_DATA) from None
        else:
            code, reason = CloseCode.NO_STATUS, ""
        self.close_received = True
        self.close = Close(code, reason)
        if not self.close_sent:
            # §5.5.1: answer with a close frame, typically echoing the code.
            self.close_sent = True
            self._out += encode_frame(OP_CLOSE, payload[:2])
        self._transition("close_received")
        events.append(self.close)

    def _fail(self, code: int, reason: str, cause: BaseException | None, events: list[Event]) -> None:
        """Fail the WebSocket connection (§7.1.7): queue a close frame, stop reading."""
        if not self.close_sent:
            self.close_sent = True
            self._out += encode_frame(OP_CLOSE, encode_close(code, reason[:MAX_CLOSE_REASON]))
        self._transition("fail")
        self._resume_after_failed_frame()
        self._end_fragments()
        if self.extension is not None:
            self.extension.close()  # no more messages either way: free the zlib state
        self.failure = Failure(code, reason, cause)
        events.append(self.failure)

    def _resume_after_failed_frame(self) -> None:
        # Keep what follows the failed frame, if its end is known, so the
        # peer's answering close frame can be recognised; else drop it all.
        buffer = self._buffer
        end = self._frame_end
        if end < 0:
            buffer.clear()
            self._skip = 1 << 64  # frame boundaries are lost: wait for EOF
        elif end <= len(buffer):
            del buffer[:end]
        else:
            self._skip = end - len(buffer)
            buffer.clear()

    def _transition(self, what: str) -> None:
        self.state = _TRANSITIONS[(self.state, what)]

    # -- output -----------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Take the bytes the connection queued by itself (pongs, close frames)."""
        self._close_out = self.close_sent
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def has_data_to_send(self) -> bool:
        """Whether :meth:`data_to_send` would return anything."""
        return bool(self._out)

    def _check_open(self) -> None:
        # Data may be framed until our close frame has been handed out: frames
        # taken before it precede it on the wire (§5.5.1: nothing after close).
        if self._close_out:
            raise InvalidStateError(f"Cannot send on a WebSocket that is {self.state.name}")

    def send_text(self, text: str) -> bytes:
        """Frame a text message (compressed when negotiated and not under the threshold)."""
        self._check_open()
        if self.extension is None:
            return encode_frame(OP_TEXT, text.encode("utf-8"))
        return self._frame_compressed(OP_TEXT, text.encode("utf-8"), self.extension)

    def send_binary(self, data: bytes | bytearray | memoryview) -> bytes:
        """Frame a binary message (compressed when negotiated and not under the threshold)."""
        self._check_open()
        if self.extension is None:
            return encode_frame(OP_BINARY, bytes(data))
        return self._frame_compressed(OP_BINARY, bytes(data), self.extension)

    def send_message(self, opcode: int, payload: bytes) -> bytes:
        """Frame an encoded text (``OP_TEXT``) or binary (``OP_BINARY``) payload, as ``send_*`` would."""
        self._check_open()
        if self.extension is None:
            return encode_frame(opcode, payload)
        return self._frame_compressed(opcode, payload, self.extension)

    @staticmethod
    def _frame_compressed(opcode: int, payload: bytes, extension: PerMessageDeflate) -> bytes:
        if len(payload) < extension.threshold:
            return encode_frame(opcode, payload)
        return encode_frame(opcode, extension.compress(payload), rsv=RSV1)

    def send_ping(self, payload: bytes = b"") -> bytes:
        """Frame a ping (at most 125 bytes, §5.5)."""
        self._check_open()
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise ValueError("A ping payload is at most 125 bytes (RFC 6455 §5.5)")
        return encode_frame(OP_PING, bytes(payload))

    def send_close(self, code: int | None = None, reason: str = "") -> bytes:
        """Start the close handshake; return the close frame, or ``b""`` if already sent.

        Raises :class:`ValueError` for a code an endpoint may not send (§7.4)
        or a reason over 123 UTF-8 bytes (§5.5).
        """
        check_close_arguments(code, reason)
        if code is None and reason:
            code = CloseCode.NORMAL  # WHATWG close(): a reason without a code means 1000
        if self.close_sent:
            return b""
        self.close_sent = True
        self._close_out = True
        if self.state is State.OPEN:
            self._transition("send_close")
        return encode_frame(OP_CLOSE, encode_close(code, reason))


def check_close_arguments(code: int | None, reason: str) -> None:
    """Raise :class:`ValueError` unless ``code`` and ``reason`` may be sent."""
    if code is not None and (not isinstance(code, int) or not is_valid_close_code(code)):
        raise ValueError(
            f"Invalid close code {code!r}: use 1000, 3000-4999, or another code an endpoint may"
            " send (RFC 6455 §7.4)"
        )
    if len(reason.encode("utf-8")) > MAX_CLOSE_REASON:
        raise ValueError("A close reason is at most 123 UTF-8 bytes (RFC 6455 §5.5)")
