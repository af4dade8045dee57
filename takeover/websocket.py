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

from takeover._io.closing import IDLE_TIMEOUT_REASON, OVERFLOW_REASON, Reason
from takeover._io.handover import send_from_thread
from takeover._io.registry import Registry
from takeover._io.session import Session
from takeover.errors import ConnectionClosed, InvalidStateError
from takeover.events import CloseEvent, ErrorEvent, Event, EventTarget, MessageEvent, handler_attribute
from takeover.options import DEFAULT_OPTIONS, WebSocketOptions
from takeover.protocol.connection import State, check_close_arguments
from takeover.protocol.deflate import PerMessageDeflate
from takeover.protocol.frames import OP_BINARY, OP_TEXT, RSV1, encode_frame

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
        #: The connection: what server adapters attach a socket to (see :class:`Session`).
        self.session = Session(
            self, options=options, handshake_response=handshake_response, url=url, deflate=deflate,
            registry=registry,
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
        transport = self.session.transport
        return transport.buffered_amount if transport is not None else 0

    # -- sending ----------------------------------------------------------

    def send(self, data: str | bytes | bytearray | memoryview) -> None:
        """Send ``str`` as a text message, bytes-like as a binary one.

        Raises :class:`InvalidStateError` while ``CONNECTING``; after the close
        has started, data is discarded as the DOM specifies. Text that cannot be
        encoded as UTF-8 (lone surrogates, as ``json.loads`` can produce)
        raises :class:`UnicodeEncodeError`, a :class:`ValueError`.

        Backpressure: while more than ``high_water_mark`` bytes are queued for
        the peer, the calling greenlet waits for the queue to drain down to
        it. After ``send_timeout`` seconds it raises :class:`TimeoutError` and
        the message is not sent (the connection stays open). Under threads the
        write itself blocks; see :attr:`send_timeout`.
        """
        session = self.session
        if session.loop is not None and not session.loop.in_loop:
            send_from_thread(session, self.send, data)  # a listener thread of a handed-over WebSocket
            return
        conn = session.conn
        if conn is None or session.closing is not None:
            if session.ready_state is State.CONNECTING:
                raise InvalidStateError("Failed to send: the WebSocket is still CONNECTING")
            return
        transport = session.transport
        assert transport is not None
        if transport.buffered_amount > transport.high_water and not session.wait_for_room():
            return
        if isinstance(data, str):
            if session.send_lock is None:
                transport.write(conn.send_text(data))
                return
            with session.send_lock:
                transport.write(conn.send_text(data))
        elif isinstance(data, (bytes, bytearray, memoryview)):
            if session.send_lock is None:
                transport.write(conn.send_binary(data))
                return
            with session.send_lock:
                transport.write(conn.send_binary(data))
        else:
            raise TypeError(f"send() takes str or a bytes-like object, not {type(data).__name__}")

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping (at most 125 bytes); the pong arrives as activity, not as an event."""
        session = self.session
        if session.loop is not None and not session.loop.in_loop:
            session.loop.call_soon_threadsafe(session.ping, bytes(payload))
            return
        session.ping(payload)

    def close(self, code: int | None = None, reason: str = "") -> None:
        """Start the close handshake (RFC 6455 §7.1.2).

        ``code`` is 1000, 3000–4999 or another code an endpoint may send, and
        ``reason`` at most 123 UTF-8 bytes, else :class:`ValueError`. The TCP
        connection is closed when the peer answers, or after ``close_timeout``.
        """
        check_close_arguments(code, reason)
        session = self.session
        if session.loop is not None and not session.loop.in_loop:
            session.loop.call_soon_threadsafe(session.close, Reason.LOCAL_CLOSE, code, reason)
            return
        session.close(Reason.LOCAL_CLOSE, code, reason)

    # -- the blocking API -------------------------------------------------

    def receive(self, timeout: float | None = None) -> str | bytes | bytearray:
        """Wait for the next message (queued when no ``message`` listener is set).

        Raises :class:`ConnectionClosed` once the connection is closed and the
        queue is empty, and :class:`TimeoutError` after ``timeout`` seconds.
        """
        session = self.session
        if session.loop is not None:
            raise InvalidStateError(
                "receive() is not available on a WebSocket handed over to takeover's I/O loop"
                " (its listeners run in takeover's listener threads): use a message listener"
            )
        inbox = session.ensure_inbox()
        if inbox is None:
            raise InvalidStateError("receive() needs a connected WebSocket")
        return inbox.get(timeout)

    def __iter__(self) -> Iterator[str | bytes | bytearray]:
        """Messages until the connection closes, then the iteration ends."""
        while True:
            try:
                yield self.receive()
            except ConnectionClosed:
                return

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until the WebSocket is CLOSED; False if ``timeout`` passed first."""
        session = self.session
        if session.loop is not None and not session.loop.in_loop:
            if session.finished:
                return True
            return session.loop.run_sync(session.wait_closed, timeout, timeout=None)
        return session.wait_closed(timeout)

    def __repr__(self) -> str:
        return f"<WebSocket {self.url or '?'} {self.ready_state.name}>"


def broadcast(websockets: Iterable[WebSocket], data: str | bytes | bytearray | memoryview) -> int:
    """Send ``data`` to every OPEN WebSocket in ``websockets``; return how many got it.

    The message is framed once and the same bytes are written to each socket
    (servers' frames are unmasked, RFC 6455 §5.1), instead of once per client.

    With permessage-deflate, a connection gets the uncompressed frame when it
    did not negotiate compression or the message is under its threshold. One
    that compresses without context takeover (``server_no_context_takeover``)
    shares a frame compressed once with every connection of the same level,
    window and memory level. One with context takeover (the default) has its
    own compressor state, which every message it is sent must go through:
    its frame is compressed for it alone.
    """
    if isinstance(data, str):
        opcode, payload = OP_TEXT, data.encode("utf-8")
    else:
        opcode, payload = OP_BINARY, bytes(data)
    plain: bytes | None = None
    shared: dict[tuple[int, int, int], bytes] = {}
    sent = 0
    elsewhere: dict[Any, list[WebSocket]] = {}  # handed-over WebSockets, by the loop they live in
    for ws in websockets:
        session = ws.session
        if session.loop is not None and not session.loop.in_loop:
            elsewhere.setdefault(session.loop, []).append(ws)
            continue
        deflate = session.deflate
        if deflate is None or len(payload) < deflate.threshold:
            if plain is None:
                plain = encode_frame(opcode, payload)
            sent += session.send_frame(plain)
            continue
        key = deflate.shared_key
        if key is None:
            sent += session.send_payload(opcode, payload)
            continue
        if session.ready_state is not State.OPEN:
            continue
        frame = shared.get(key)
        if frame is None:
            frame = shared[key] = encode_frame(opcode, deflate.compress(payload), rsv=RSV1)
        sent += session.send_frame(frame)
    for loop, those in elsewhere.items():
        # Written by their loop's thread; counted as the ones OPEN now.
        loop.call_soon_threadsafe(broadcast, those, data if isinstance(data, (str, bytes)) else bytes(data))
        sent += sum(ws.ready_state is State.OPEN for ws in those)
    return sent
