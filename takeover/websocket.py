"""``takeover.WebSocket``: a browser/Deno-like WebSocket over a taken-over socket, and ``broadcast``.

This module is the facade: the DOM's surface (``ready_state``, ``send``,
``close``, ``onmessage``...) and the blocking API (``receive``, iteration).
The connection itself — the 101, the read loop, timers and closing — is the
:class:`~takeover._io.session.Session` each WebSocket has (``ws.session``),
which is also what server adapters talk to.

Sending does not block on a slow peer: frames go to the transport's queue and
``buffered_amount`` counts them. Two bounds keep a peer that stops reading
from growing that queue without end: :meth:`WebSocket.send` waits while more
than ``high_water_mark`` bytes are queued (up to ``send_timeout`` seconds),
and a connection with more than ``max_buffered_amount`` bytes waiting is
closed with 1008.

Messages go to ``message`` listeners; when there are none they are queued for
the blocking API (:meth:`WebSocket.receive`, ``for message in ws``), up to
``max_queue`` of them, after which reading pauses until they are consumed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from takeover._io.batch import encode_data, frame_for
from takeover._io.closing import IDLE_TIMEOUT_REASON, OVERFLOW_REASON
from takeover._io.loop import Loop, loop_for_caller
from takeover._io.registry import Registry
from takeover._io.session import Session
from takeover.errors import ConnectionClosed
from takeover.events import CloseEvent, ErrorEvent, Event, EventTarget, MessageEvent, handler_attribute
from takeover.options import DEFAULT_OPTIONS, WebSocketOptions
from takeover.protocol.connection import State, check_close_arguments
from takeover.protocol.deflate import PerMessageDeflate
from takeover.protocol.frames import OP_PONG

__all__ = ["IDLE_TIMEOUT_REASON", "OVERFLOW_REASON", "WebSocket", "broadcast"]


class WebSocket(EventTarget):
    """The server end of a WebSocket, shaped like the browser's and Deno's.

    Create it with :func:`takeover.upgrade_websocket`. ``ready_state`` goes
    ``CONNECTING`` → ``OPEN`` → ``CLOSING`` → ``CLOSED``; listen with
    :meth:`add_event_listener` or the ``onopen``/``onmessage``/``onclose``/
    ``onerror`` attributes, or read with :meth:`receive` and iteration.
    """

    __slots__ = ("__weakref__", "binary_type", "extensions", "protocol", "session", "url")

    CONNECTING = State.CONNECTING
    OPEN = State.OPEN
    CLOSING = State.CLOSING
    CLOSED = State.CLOSED

    onopen = handler_attribute[Event]("open")
    onmessage = handler_attribute[MessageEvent]("message")
    onclose = handler_attribute[CloseEvent]("close")
    onerror = handler_attribute[ErrorEvent]("error")

    def __init__(
        self,
        *,
        handshake_response: bytes,
        url: str = "",
        protocol: str = "",
        extensions: str = "",
        deflate: PerMessageDeflate | None = None,
        options: WebSocketOptions = DEFAULT_OPTIONS,
        registry: Registry | None = None,
        loop: Loop | None = None,
        socket: Any = None,
    ) -> None:
        super().__init__()
        self.url = url
        #: The subprotocol chosen in the handshake, or ``""``.
        self.protocol = protocol
        #: The extensions negotiated in the handshake, as the response's
        #: ``Sec-WebSocket-Extensions`` states them (``"permessage-deflate"``
        #: with its parameters), or ``""``.
        self.extensions = extensions or (deflate.response if deflate is not None else "")
        #: ``"bytes"`` (the default) or ``"bytearray"``: the type of binary ``MessageEvent.data``.
        self.binary_type = "bytes"
        #: The connection, in the loop it lives in (``loop``; by default where the caller's
        #: upgrades live, see takeover._io.loop): what server adapters attach a socket to.
        self.session = Session(
            self, loop=loop if loop is not None else loop_for_caller(socket), options=options,
            handshake_response=handshake_response, url=url, deflate=deflate, registry=registry,
        )

    # -- state ------------------------------------------------------------

    @property
    def ready_state(self) -> State:
        """``CONNECTING`` (0), ``OPEN`` (1), ``CLOSING`` (2) or ``CLOSED`` (3)."""
        return self.session.ready_state

    @property
    def options(self) -> WebSocketOptions:
        """The options this WebSocket was upgraded with."""
        return self.session.options

    @property
    def idle_timeout(self) -> float | None:
        """Seconds of silence before a ping, twice that before closing with 1001 (None: never)."""
        return self.session.options.idle_timeout

    @property
    def close_timeout(self) -> float:
        """Seconds to wait for the peer's answer to our close frame."""
        return self.session.options.close_timeout

    @property
    def high_water_mark(self) -> int | None:
        """:meth:`send` waits while more than this many bytes are queued (None: never waits)."""
        return self.session.options.high_water_mark

    @property
    def send_timeout(self) -> float | None:
        """Seconds :meth:`send` waits for the queue to drain before raising TimeoutError."""
        return self.session.options.send_timeout

    @property
    def max_buffered_amount(self) -> int | None:
        """Bytes that may be queued behind the frame being written; more closes with 1008."""
        return self.session.options.max_buffered_amount

    @property
    def remote_address(self) -> Any:
        """The peer's address (``(host, port)`` for TCP), or None before the takeover."""
        return self.session.remote_address

    @property
    def attached(self) -> bool:
        """Whether a socket has been handed to this WebSocket yet."""
        return self.session.transport is not None

    @property
    def buffered_amount(self) -> int:
        """Bytes of sent frames not yet handed to the operating system (exact)."""
        return self.session.buffered_amount

    # -- sending ----------------------------------------------------------

    def send(self, data: str | bytes | bytearray | memoryview) -> None:
        """Send ``str`` as a text message, bytes-like as a binary one.

        Raises :class:`InvalidStateError` while ``CONNECTING``; after the close
        has started, data is discarded as the DOM specifies. Text that cannot be
        encoded as UTF-8 (lone surrogates, as ``json.loads`` can produce)
        raises :class:`UnicodeEncodeError`, a :class:`ValueError`.

        Safe from any thread. Backpressure: while more than
        ``high_water_mark`` bytes are queued for the peer, the caller (a
        greenlet or a thread) waits for the queue to drain down to it. After
        ``send_timeout`` seconds it raises :class:`TimeoutError` and the message
        is not sent (the connection stays open). More than
        ``max_buffered_amount`` queued closes the connection with 1008.
        """
        self.session.send(data)

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping (at most 125 bytes); the pong arrives as activity, not as an event."""
        self.session.ping(payload)

    def pong(self, payload: bytes = b"") -> None:
        """Send an unsolicited pong (at most 125 bytes): a one-way heartbeat (RFC 6455 §5.5.3)."""
        if len(payload) > 125:
            raise ValueError("A pong payload is at most 125 bytes (RFC 6455 §5.5)")
        self.session.write(OP_PONG, bytes(payload))

    def close(self, code: int | None = None, reason: str = "") -> None:
        """Start the close handshake (RFC 6455 §7.1.2).

        ``code`` is 1000, 3000–4999 or another code an endpoint may send, and
        ``reason`` at most 123 UTF-8 bytes, else :class:`ValueError`. The TCP
        connection is closed when the peer answers, or after ``close_timeout``.
        """
        check_close_arguments(code, reason)
        self.session.request_close(code, reason)

    # -- the blocking API -------------------------------------------------

    def receive(self, timeout: float | None = None) -> str | bytes | bytearray:
        """Wait for the next message (queued when no ``message`` listener is set).

        From any greenlet or thread. Raises :class:`ConnectionClosed` once the
        connection is closed and the queue is empty, and :class:`TimeoutError`
        after ``timeout`` seconds.
        """
        return self.session.receive(timeout)

    def __iter__(self) -> Iterator[str | bytes | bytearray]:
        """Messages until the connection closes, then the iteration ends."""
        while True:
            try:
                yield self.receive()
            except ConnectionClosed:
                return

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until the WebSocket is CLOSED; False if ``timeout`` passed first."""
        return self.session.wait_closed(timeout)

    def __repr__(self) -> str:
        return f"<WebSocket {self.url or '?'} {self.ready_state.name}>"


def broadcast(websockets: Iterable[WebSocket], data: str | bytes | bytearray | memoryview) -> int:
    """Send ``data`` to every OPEN WebSocket in ``websockets``; return how many got it.

    The message is framed once and the same bytes are written to each socket
    (servers' frames are unmasked, RFC 6455 §5.1), instead of once per client.
    It never waits for room: a connection with more than
    ``max_buffered_amount`` bytes queued is closed with 1008. Safe from any
    thread: each socket is written through its session's one send path.

    With permessage-deflate, a connection gets the uncompressed frame when it
    did not negotiate compression or the message is under its threshold. One
    that compresses without context takeover (``server_no_context_takeover``)
    shares a frame compressed once with every connection of the same level,
    window and memory level. One with context takeover (the default) has its
    own compressor state, which every message it is sent must go through:
    its frame is compressed for it alone.
    """
    opcode, payload = encode_data(data)
    frames: dict[object, bytes] = {}
    sent = 0
    for ws in websockets:
        session = ws.session
        sent += session.write(opcode, payload, frame_for(session, opcode, payload, frames))
    return sent
