"""The server side of an open WebSocket connection, without I/O (RFC 6455 §5–§7).

:class:`Connection` takes the bytes read from the client and gives back events,
and turns what the application sends into bytes to write. It never reads or
writes a socket and never raises at the caller because of what the peer sent:
every remote protocol violation ends in :meth:`Connection._fail`, which queues
the close frame with the RFC code (1002, 1007, 1009, or 1011 for a bug of ours)
and reports a :class:`Failure` event carrying the original exception for logs.

It also tells the I/O layer how to end the TCP connection, so that those
decisions are tested with bytes alone: after every call, write
:meth:`~Connection.data_to_send`; then, when :attr:`~Connection.eof_to_send`
is true, end the TCP connection, reading on first for as long as
:meth:`~Connection.close_expected` says the peer's close frame may still come;
when the peer ends its side, call :meth:`~Connection.receive_eof`. The whole
closing machine is the table in :mod:`takeover.protocol.state`, with its rules;
the events are in :mod:`takeover.protocol.events`, and the reassembly of
fragmented messages in :mod:`takeover.protocol.messages`.
"""

from __future__ import annotations

from takeover.protocol.deflate import DeflateError, MessageTooBig, PerMessageDeflate
from takeover.protocol.errors import FailureKind, InvalidStateError, ProtocolViolation
from takeover.protocol.events import Close, ConnectionLost, Event, Failure, Message, Ping, Pong
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
from takeover.protocol.messages import MessageAssembly

# The states as module constants: a global lookup is cheaper than an enum attribute.
from takeover.protocol.state import (
    _CLOSED,
    _FAILED,
    _FAILING,
    _LOCAL_CLOSING,
    _OPEN,
    _REMOTE_CLOSING,
    ConnectionState,
    State,
)
from takeover.protocol.state import LEGACY_STATE as _LEGACY_STATE
from takeover.protocol.state import READY_STATE as _READY_STATE
from takeover.protocol.state import TRANSITIONS as _TRANSITIONS

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "Close",
    "Connection",
    "ConnectionLost",
    "ConnectionState",
    "Event",
    "Failure",
    "FailureKind",
    "Message",
    "Ping",
    "Pong",
    "State",
]

#: Deno's cap on a message, and our default (``ws`` uses 100 MiB).
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024


def _rotate(mask: bytearray | bytes, offset: int) -> bytes:
    """The masking key as seen from ``offset`` bytes into the payload (§5.3)."""
    shift = offset & 3
    return bytes(mask[shift:] + mask[:shift])


def _violation(
    reason: str, kind: FailureKind, code: int = CloseCode.PROTOCOL_ERROR
) -> ProtocolViolation:
    return ProtocolViolation(code, reason, kind)


class Connection(MessageAssembly):
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
        "_buffer", "_frame_end", "_out", "_skip", "_state", "close", "close_received", "close_sent",
        "extension", "failure", "max_message_size",
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
        self._state = _OPEN
        #: Records of what happened (they decide nothing: the state does): we framed a
        #: close frame (sent, or queued in data_to_send), and we parsed the peer's.
        self.close_sent = False
        self.close_received = False
        #: The close frame we received, once we have.
        self.close: Close | None = None
        #: Why we failed the connection, if we did.
        self.failure: Failure | None = None
        self._buffer = bytearray(trailing_data)
        self._out = bytearray()
        self._init_message()  # the message being reassembled (MessageAssembly)
        # After a failure: the end of the failed frame, and bytes still to skip.
        self._frame_end = -1
        self._skip = 0

    # -- input ------------------------------------------------------------

    def receive_data(self, data: bytes = b"") -> list[Event]:
        """Feed bytes read from the client; return the events they complete."""
        state = self._state
        if state is not _OPEN and state is not _LOCAL_CLOSING:
            # §7.1.1: nothing after the peer's close frame is read. After a
            # failure, frames are only skipped until the peer's close arrives.
            if state is _FAILING or state is _FAILED:
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
        # Every failure is mapped to its close code here, and only here (§7.4.1).
        except ProtocolViolation as violation:
            code, reason, kind = violation.code, violation.reason, violation.kind
            cause: BaseException = violation
        except UnicodeDecodeError as error:  # §8.1
            code, kind, cause = CloseCode.INVALID_DATA, FailureKind.INVALID_UTF8, error
            reason = "Invalid UTF-8 in text message"
        except MessageTooBig as error:
            reason = f"Message inflates to over the limit of {self.max_message_size} bytes"
            code, kind = CloseCode.TOO_BIG, FailureKind.UNSUPPORTED_MESSAGE_LENGTH
            cause = error.with_traceback(None)  # its frames hold the output inflated so far
        except DeflateError as error:  # as ws: the data, not the framing, is wrong
            code, kind = CloseCode.INVALID_DATA, FailureKind.INVALID_COMPRESSED_DATA
            reason, cause = "Invalid compressed data", error.with_traceback(None)
        except Exception as error:  # a bug of ours: close with 1011 and no details (§7.4.1)
            code, reason, kind = CloseCode.INTERNAL_ERROR, "Internal error", FailureKind.INTERNAL_ERROR
            cause = error
        else:
            if consumed:
                del buffer[:consumed]
            return events
        self._fail(code, reason, cause, events, kind)
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
        while end - pos >= 2 and (self._state is _OPEN or self._state is _LOCAL_CLOSING):
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
        skip = self._skip
        if skip:  # the rest of a frame being skipped
            if skip >= len(data):
                self._skip = skip - len(data)
                return
            data = data[skip:]
            self._skip = 0
        buffer += data
        pos = 0
        try:
            while (header := decode_header_fields(buffer, pos)) is not None:
                _, _, opcode, _, length, size = header
                if opcode == OP_CLOSE:  # not parsed: only its arrival matters now
                    self.close_received = True
                    self._transition("close_received")
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
            raise _violation("Client frames must be masked", FailureKind.EXPECTED_MASK)  # §5.1
        if rsv:
            if rsv != RSV1 or self.extension is None:  # §5.2
                kind = FailureKind.UNEXPECTED_RSV_1 if rsv == RSV1 else FailureKind.UNEXPECTED_RSV_2_3
                raise _violation("Reserved bits must be 0 without a negotiated extension", kind)
            if opcode == OP_CONT or opcode >= OP_CLOSE:
                # RFC 7692 §6.1: RSV1 only on the first frame of a data message.
                raise _violation("RSV1 set on a control or continuation frame", FailureKind.UNEXPECTED_RSV_1)
        if opcode >= OP_CLOSE:
            if opcode > OP_PONG:
                raise _violation(f"Reserved opcode {opcode:#x}", FailureKind.INVALID_OPCODE)  # §5.2
            if length > MAX_CONTROL_PAYLOAD:  # §5.5
                kind = FailureKind.INVALID_CONTROL_PAYLOAD_LENGTH
                raise _violation("Control frame payload over 125 bytes", kind)
            if not fin:
                raise _violation("Fragmented control frame", FailureKind.EXPECTED_FIN)  # §5.5
            return
        if opcode > OP_BINARY:
            raise _violation(f"Reserved opcode {opcode:#x}", FailureKind.INVALID_OPCODE)  # §5.2
        if opcode == OP_CONT:
            if self._fragment_opcode is None:  # §5.4
                raise _violation(
                    "Continuation frame without a message to continue", FailureKind.UNEXPECTED_CONTINUATION
                )
            size = self._fragment_size + length
        else:
            if self._fragment_opcode is not None:  # §5.4
                raise _violation(
                    "New data frame before the fragmented message ended", FailureKind.EXPECTED_CONTINUATION
                )
            size = length
        limit = self.max_message_size
        if limit is not None and size > limit:  # §10.4
            raise _violation(
                f"Message of {size} bytes is over the limit of {limit}",
                FailureKind.UNSUPPORTED_MESSAGE_LENGTH,
                CloseCode.TOO_BIG,
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

    # -- closing (§5.5.1, §7) ---------------------------------------------

    def _on_close(self, payload: bytes, events: list[Event]) -> None:
        if len(payload) == 1:  # §5.5.1: 0 or at least 2
            raise _violation("Close frame payload of 1 byte", FailureKind.INVALID_CONTROL_PAYLOAD_LENGTH)
        if payload:
            code = int.from_bytes(payload[:2], "big")
            if not is_valid_close_code(code):
                raise _violation(f"Invalid close code {code}", FailureKind.INVALID_CLOSE_CODE)  # §7.4
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:  # §5.5.1, §8.1
                raise _violation(
                    "Invalid UTF-8 in close reason", FailureKind.INVALID_UTF8, CloseCode.INVALID_DATA
                ) from None
        else:
            code, reason = CloseCode.NO_STATUS, ""
        self.close_received = True
        self.close = Close(code, reason)
        if self._state is _OPEN:
            # §5.5.1: answer with a close frame, typically echoing the code.
            self.close_sent = True
            self._out += encode_frame(OP_CLOSE, payload[:2])
        self._transition("close_received")
        events.append(self.close)

    def _fail(
        self, code: int, reason: str, cause: BaseException | None, events: list[Event], kind: FailureKind
    ) -> None:
        """Fail the WebSocket connection (§7.1.7): queue a close frame, stop parsing."""
        if self._state is _OPEN:  # else our close frame has left already
            self.close_sent = True
            self._out += encode_frame(OP_CLOSE, encode_close(code, reason[:MAX_CLOSE_REASON]))
        self._transition("fail")
        self._resume_after_failed_frame()
        self._skip_to_close(b"")  # the peer's close may be in this read already
        self._end_fragments()
        if self.extension is not None:
            self.extension.close()  # no more messages either way: free the zlib state
        self.failure = Failure(code, reason, cause, kind)
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
        """Move by the table; a pair it does not have is a bug of ours."""
        try:
            self._state = _TRANSITIONS[(self._state, what)]
        except KeyError:
            raise RuntimeError(f"No transition from {self._state.name} on {what!r}") from None

    def receive_eof(self) -> list[Event]:
        """The peer's TCP stream ended; return what that means for the application.

        Before the peer's close frame, a :class:`ConnectionLost` (§7.1.5: code
        1006, not clean); after it, or after a failure (whose :class:`Failure`
        was the end already), nothing. The connection is then CLOSED: later
        bytes are ignored and nothing more may be sent. A message not finished
        is dropped. Calling it again returns nothing.
        """
        state = self._state
        if state is _CLOSED:
            return []
        self._transition("eof")
        self._buffer.clear()
        self._end_fragments()
        if self.extension is not None:
            self.extension.close()
        if state is _OPEN or state is _LOCAL_CLOSING:  # the peer's close never came
            return [ConnectionLost(close_sent=state is _LOCAL_CLOSING)]
        return []

    def close_expected(self) -> bool:
        """Whether the peer's close frame is still to come: keep reading (§7.1.1, §7.1.7).

        True once our close frame is sent or queued (LOCAL_CLOSING, FAILING,
        FAILED) until the peer's arrives: the I/O layer keeps feeding
        :meth:`receive_data` until this turns False, the peer ends the stream
        (:meth:`receive_eof`), or its close timeout passes (then the close is
        abnormal, 1006).
        """
        state = self._state
        return state is _LOCAL_CLOSING or state is _FAILING or state is _FAILED

    @property
    def eof_to_send(self) -> bool:
        """Whether the I/O layer should now end the TCP connection, once data_to_send() is written.

        §7.1.1: after the close handshake the server closes the TCP
        connection first (CLOSED). After a failure, once our close frame has
        left (FAILED), send FIN (shut down writing) and, while
        :meth:`close_expected`, read on for the peer's close or EOF, so that it
        reads our close frame rather than a reset (§7.1.7).
        """
        state = self._state
        return state is _CLOSED or state is _FAILED

    @property
    def connection_state(self) -> ConnectionState:
        """Where the closing handshake stands (see the rules at the top of this module)."""
        return self._state

    @property
    def ready_state(self) -> State:
        """The DOM's ``readyState`` of this connection: CLOSING from either side's close on."""
        return _READY_STATE[self._state]

    @property
    def state(self) -> State:
        """OPEN, CLOSING (we closed first) or CLOSED (the peer's close or a failure): the reading side's view.

        Kept as it always was; :attr:`ready_state` is the DOM's, and
        :attr:`connection_state` says which of the closing states it is.
        """
        return _LEGACY_STATE[self._state]

    # -- output -----------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Take the bytes the connection queued by itself (pongs, close frames)."""
        state = self._state
        if state is _REMOTE_CLOSING or state is _FAILING:
            self._transition("close_taken")  # our queued close frame leaves with these bytes
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
        state = self._state
        if state is not _OPEN and state is not _REMOTE_CLOSING and state is not _FAILING:
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
        if self._state is not _OPEN:
            return b""  # our close frame was framed already, or the connection is over
        self.close_sent = True
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
