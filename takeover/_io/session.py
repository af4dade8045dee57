"""The life of one WebSocket connection: attach, run, the read loop, keepalive, and closing.

A :class:`Session` is made with its :class:`~takeover.WebSocket` and the
:class:`~takeover._io.loop.Loop` it lives in, and waits for a socket.
:meth:`Session.attach` (the entry point of every server adapter, from any
thread) registers the socket, moves it into the loop and starts
:meth:`Session.run` in a greenlet there (or in the calling greenlet with
``inline=True``). ``run`` writes the 101, feeds the ``head`` bytes and then
everything read to the sans-I/O
:class:`~takeover.protocol.connection.Connection`, and dispatches what comes
out as DOM events on the WebSocket: in the loop, or through a
:class:`~takeover._io.listeners.Mailbox` to the loop's listener threads.

Everything that reads or changes the session runs in its loop; what
application threads call (:meth:`Session.send`, :meth:`Session.receive`,
``close``, ``ping``, :meth:`Session.wait_closed`) is safe from any thread:
each either hops to the loop (``loop.call``) or waits through
:class:`~takeover._io.waiting.Waiters`.

**One send path.** Every frame a session writes — messages from ``send()``,
:func:`~takeover.broadcast` and the hub, legacy sends, pings and pongs, the
core's own answers — goes through :meth:`Session.write`, under the
transport's lock, with one definition of "open" (:meth:`Session.is_open`).

Every way a connection ends goes through :meth:`Session.close`, driven by the
table :data:`~takeover._io.closing.CLOSINGS`: one row per reason says whether a close frame is sent,
how long to flush, whether to linger for the peer's close, which code and
``was_clean`` the ``close`` event gets, and whether an ``error`` event comes
first. :meth:`Session._finish` — CLOSED, the events, exactly once — is called
from that routine alone.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from takeover._io import keepalive
from takeover._io.adopt import adopt, detach_for_loop, is_gevent_socket
from takeover._io.closing import (
    IDLE_TIMEOUT_REASON,
    NOT_RETURNED,
    OVERFLOW_REASON,
    Reason,
)
from takeover._io.ending import Ending, access_logger
from takeover._io.inbox import Inbox
from takeover._io.listeners import Mailbox, run_listeners
from takeover._io.registry import DEFAULT_REGISTRY, Registry
from takeover._io.stats import STATS
from takeover._io.transport import GeventTransport, no_delay, peer_address, peer_name
from takeover._io.waiting import Waiters, real_lock
from takeover.errors import InvalidStateError
from takeover.events import CloseEvent, ErrorEvent, Event, MessageEvent
from takeover.options import WebSocketOptions
from takeover.protocol.connection import Close, Connection, ConnectionLost, Failure, Message, State
from takeover.protocol.deflate import PerMessageDeflate
from takeover.protocol.events import Event as ProtocolEvent
from takeover.protocol.frames import (
    OP_BINARY,
    OP_PING,
    OP_TEXT,
    CloseCode,
    encode_frame,
)

if TYPE_CHECKING:
    from takeover._flask import FlaskContext
    from takeover._io.loop import Loop, TimerHandle
    from takeover.websocket import WebSocket

__all__ = ["IDLE_TIMEOUT_REASON", "OVERFLOW_REASON", "Session"]

logger = logging.getLogger("takeover")

_UNKNOWN = object()


class Session(Ending):
    """One connection of a :class:`~takeover.WebSocket` (see the module's docstring).

    The adapter interface: :meth:`claim` when a server has been handed the
    101 response, :meth:`attach` with the socket and its ``head`` bytes,
    :meth:`abandon` when the response was never returned, :meth:`refuse`
    when the server cannot hand the connection over, and
    :attr:`handshake_response` / :attr:`response_headers` for a server that
    writes the 101 itself.
    """

    __slots__ = (
        "_done", "_may_park", "_ping_sent_at", "_remote_address", "_sending_paused",
        "_state_lock", "bytes_in", "bytes_out", "claimed", "conn", "context", "deflate",
        "handshake_response", "inbox", "last_activity", "loop", "mailbox", "messages_in", "messages_out",
        "opened_at", "options", "registry", "response_headers", "transport", "url",
    )

    def __init__(
        self,
        ws: WebSocket,
        *,
        loop: Loop,
        options: WebSocketOptions,
        handshake_response: bytes,
        url: str,
        deflate: PerMessageDeflate | None,
        registry: Registry | None,
    ) -> None:
        #: The WebSocket, until it is CLOSED (it holds this session: the cycle ends then).
        self.ws: WebSocket | None = ws
        #: The loop this session lives in, for its whole life (takeover._io.loop).
        self.loop = loop
        self.options = options
        #: The 101 response the session writes before anything else ("" once written,
        #: or when the server writes it: then with :attr:`response_headers`).
        self.handshake_response = handshake_response
        #: The 101's headers, for a server that writes the 101 as its own response.
        self.response_headers: list[tuple[str, str]] = []
        #: Flask's contexts from the upgrade, around each listener call (takeover._flask).
        self.context: FlaskContext | None = None
        #: A blocking function run once open, in a thread or greenlet of its own (takeover._io.handlers).
        self.handler: Callable[[WebSocket], object] | None = None
        self.url = url
        self.deflate = deflate
        if registry is None or (registry is DEFAULT_REGISTRY and loop.registry is not None):
            registry = loop.registry or DEFAULT_REGISTRY  # the I/O loop's WebSockets are closed at exit
        self.registry = registry
        self.conn: Connection | None = None
        self.transport: GeventTransport | None = None
        #: The messages for ``receive()`` (made on first use: a WebSocket driven by listeners needs none).
        self.inbox: Inbox | None = None
        #: Where the listeners run when the loop has a listener pool (the I/O loop's threads).
        self.mailbox: Mailbox | None = None
        if loop.listener_pool is not None:
            loop.listener_pool.size_once(options.listener_threads)
            self.mailbox = Mailbox(ws, loop.listener_pool, loop, session=self)
        #: Set once a server has been handed the 101 response (or the socket).
        self.claimed = False
        #: The reason of the closing under way (a row of CLOSINGS), once one has begun:
        #: what ``ready_state`` is derived from, with ``conn`` and ``finished``.
        self.closing: Reason | None = None
        self.finished = False
        #: Set once the ``close`` event has been dispatched (by the loop or the listener threads).
        self.dispatched_close = False
        self.close_event: CloseEvent | None = None
        self._remote_address: Any = None
        self.last_activity = 0.0
        self.opened_at = 0.0
        self._ping_sent_at = 0.0
        self._sending_paused = False  # send() waits for room: the reader may be this greenlet
        self._close_requested: tuple[Reason, int | None, str] | None = None
        self._timer: TimerHandle | None = None
        self._state_lock = real_lock()  # guards ``finished`` for the waiters of wait_closed()
        self._done: Waiters | None = None
        self._may_park = False
        self._registered: Any = None
        # Plain counts, summed when asked (takeover._io.stats); bytes as on the wire.
        self.messages_in = self.messages_out = self.bytes_in = self.bytes_out = 0

    # -- what the facade asks (from any thread) ---------------------------------

    @property
    def ready_state(self) -> State:
        """The DOM's ``readyState``: what the application has been told, not what the core has read.

        The core may have parsed the peer's close (or failed the connection) in
        the same read as messages still being dispatched: until the session
        acts on that event, listeners see OPEN and may still send, and their
        frames go out before the close frame, which the core only hands out
        after them. So the state follows the closing under way, once begun.
        """
        if self.finished:
            return State.CLOSED
        if self.closing is not None:
            return State.CLOSING
        if self.conn is None:
            return State.CONNECTING if self._close_requested is None else State.CLOSING
        return State.OPEN

    def is_open(self) -> bool:
        """Whether a message may be written now: the one definition every write uses.

        OPEN (a connection, no closing begun: CLOSED implies one) and a
        transport that still accepts writes (not overflowed, not broken).
        Read under the transport's lock by :meth:`write`.
        """
        transport = self.transport
        return (
            self.closing is None and self.conn is not None and transport is not None and transport.accepting
        )

    @property
    def paused(self) -> bool:
        """Whether reading is paused by us (receive() queue full, listeners behind, send() waiting)."""
        return (
            self._sending_paused
            or (self.inbox is not None and self.inbox.paused)
            or (self.mailbox is not None and self.mailbox.paused)
        )

    @property
    def buffered_amount(self) -> int:
        transport = self.transport
        return transport.buffered_amount if transport is not None else 0

    def dispatch(self, event: Event | MessageEvent | CloseEvent | ErrorEvent) -> None:
        """Give ``event`` to the listeners: here, or through the mailbox to the listener pool."""
        mailbox = self.mailbox
        if mailbox is not None:
            mailbox.post(event)
            return
        self.run_listeners(event)

    def run_listeners(self, event: Event | MessageEvent | CloseEvent | ErrorEvent) -> None:
        """Call ``event``'s listeners here (inside Flask's contexts when upgraded in a view)."""
        assert self.ws is not None
        run_listeners(self.ws, event, self.context)

    @property
    def path(self) -> str:
        return urlsplit(self.url).path or "/"

    @property
    def remote_address(self) -> Any:
        """The peer's address, or None before the takeover (looked up on first use: a syscall)."""
        if self._remote_address is _UNKNOWN:
            self._remote_address = peer_address(self.transport.sock if self.transport else None)
        return self._remote_address

    @property
    def peer(self) -> str:
        """The peer's address as ``host:port``, for logs."""
        return peer_name(self.remote_address)

    def ensure_inbox(self) -> Inbox:
        """The queue ``receive()`` reads (made on first use, by the reader or a first ``receive()``)."""
        inbox = self.inbox
        if inbox is None:
            with self._state_lock:  # the reader and an application thread may both get here first
                inbox = self.inbox
                if inbox is None:
                    inbox = self.inbox = Inbox(self.loop, self.options.max_queue)
                    if self.close_event is not None:  # first asked for after the close
                        inbox.end(self.close_event)
        return inbox

    def receive(self, timeout: float | None) -> str | bytes | bytearray:
        """The next message for the blocking API, from the loop's greenlets or any thread.

        Called before the connection opens, it waits for it (a reader thread may start first).
        """
        return self.ensure_inbox().get(timeout)

    def send(self, data: str | bytes | bytearray | memoryview) -> None:
        """``WebSocket.send``: check, wait for room above the high-water mark, then :meth:`write`."""
        if isinstance(data, str):
            opcode, payload = OP_TEXT, data.encode("utf-8")
        elif isinstance(data, (bytes, bytearray, memoryview)):
            opcode, payload = OP_BINARY, bytes(data)
        else:
            raise TypeError(f"send() takes str or a bytes-like object, not {type(data).__name__}")
        transport = self.transport
        if transport is None or self.conn is None or self.closing is not None:
            if self.ready_state is State.CONNECTING:
                raise InvalidStateError("Failed to send: the WebSocket is still CONNECTING")
            return  # closing or closed: discarded, as the DOM does
        if transport.buffered_amount > transport.high_water and not self.wait_for_room():
            return
        self.write(opcode, payload)

    def write(self, opcode: int, payload: bytes, frame: bytes | None = None, messages: int = 1) -> bool:
        """The one write of a frame, from any thread; False unless the session :meth:`is_open`.

        ``payload`` (encoded: UTF-8 for text) is framed here (messages compressed
        when negotiated; control frames never, RFC 7692 §6.1), under the transport's
        lock, so that frames leave in the order the compressor saw them (RFC
        7692 §7.2.1, context takeover); ``frame`` is one already framed for
        this connection (:func:`~takeover.broadcast`'s shared frame; ``messages``
        frames joined, from a :class:`~takeover._io.batch.Batch`). Returns
        whether the session is still open after it (an overflow closes it).
        """
        transport = self.transport
        if transport is None:
            return False
        conn = self.conn
        with transport.lock:
            if self.closing is not None or conn is None or not transport.accepting:
                return False
            try:
                if frame is None:
                    if opcode <= OP_BINARY:
                        frame = conn.send_message(opcode, payload)
                    elif opcode == OP_PING:
                        frame = conn.send_ping(payload)
                    else:  # a pong (legacy's send_frame, gevent-websocket's API)
                        frame = encode_frame(opcode, payload)
            except InvalidStateError:  # our close frame was framed meanwhile
                return False
            if opcode <= OP_BINARY:
                self.messages_out += messages
            self.bytes_out += len(frame)
            transport.write_locked(frame)
            return transport.accepting

    def write_control(self, frame: bytes) -> None:
        """Write the core's own answer (a pong, the close echo) in its turn, under the same lock."""
        transport = self.transport
        assert transport is not None
        self.bytes_out += len(frame)
        transport.write(frame)

    def wait_for_room(self) -> bool:
        """Wait for the send queue to drain to the high-water mark; False if the close began meanwhile."""
        transport = self.transport
        assert transport is not None
        timeout = self.options.send_timeout
        # While a greenlet of the loop waits it may be the reader: the idle timer must
        # not count that silence as the peer's (as when receive()'s queue is full).
        self._sending_paused = True
        try:
            room = transport.wait_for_room(timeout, lambda: self.closing is not None)
        finally:
            self._sending_paused = False
            self.last_activity = time.monotonic()
        if not self.is_open():
            return False  # the close started meanwhile: discarded, as the DOM does
        if not room:
            raise TimeoutError(
                f"send() waited {timeout} s for the peer to read: {transport.buffered_amount}"
                f" bytes are still queued (high_water_mark={self.options.high_water_mark}). The"
                " message was not sent; close the connection, drop the message or retry."
            )
        return True

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping (at most 125 bytes) if OPEN."""
        self.write(OP_PING, bytes(payload))

    def request_close(self, code: int | None, reason: str) -> None:
        """``WebSocket.close``: start the close handshake, in the loop."""
        self.loop.call(self.close, Reason.LOCAL_CLOSE, code, reason)

    def wait_closed(self, timeout: float | None) -> bool:
        """Block until CLOSED and the ``close`` event dispatched (from the loop's greenlets or any
        thread); False if ``timeout`` passed first."""
        if self.dispatched_close:
            return True
        with self._state_lock:
            if self._done is None:
                self._done = Waiters(self.loop, self._state_lock)
            done = self._done
        return done.wait_for(lambda: self.dispatched_close, timeout)

    def set_handler(self, handler: Callable[[WebSocket], object]) -> None:
        """Run ``handler(ws)`` once open, off the loop where the loop has listener threads.

        Raises a 503 :class:`~takeover.errors.HandshakeError` when the
        process's ``handler_threads`` are all taken (see takeover._io.handlers).
        """
        if self.loop.listener_pool is not None:
            from takeover._io.handlers import HANDLER_THREADS

            HANDLER_THREADS.reserve(self.options.handler_threads)
        self.handler = handler

    # -- the adapter interface (from any thread) -----------------------------------

    def claim(self) -> None:
        """A server has been handed the 101 response: the takeover is under way."""
        if self.claimed:
            raise InvalidStateError("This upgrade response was already used")
        self.claimed = True

    def abandon(self) -> None:
        """The 101 response was never returned (Deno logs this and closes)."""
        if self.finished or self.claimed or self.transport is not None:
            return
        logger.error(NOT_RETURNED)
        self.loop.call(self.close, Reason.ABANDONED)

    def refuse(self, message: str) -> None:
        """The server cannot hand the connection over (it was answered 501): 1006, with ``message``."""
        if not self.finished and self.transport is None:
            self.loop.call(self.close, Reason.UNSUPPORTED_SERVER, None, message)

    def attach(
        self, sock: Any, head: bytes = b"", *, inline: bool = False, owns_socket: bool = True,
        registry: Registry | None = None,
    ) -> None:
        """Take over ``sock``, whose ``head`` bytes were already read past the request.

        From the loop, ``sock`` is one of its gevent sockets: :meth:`run` starts
        in a greenlet of its own and this returns at once, so that listeners
        attached right after :func:`~takeover.upgrade_websocket` returns see
        ``open``; with ``inline`` it runs in the calling greenlet instead and
        returns when the connection ends. From another thread, ``sock`` is a
        plain socket that is the session's alone: it moves into the loop (its
        descriptor detached) and this returns at once, or with ``inline`` when
        the connection ends. Without ``owns_socket`` the socket is shut down at
        the end but left for its server to close. ``registry`` replaces the
        one the session was made with (a server that closes its own at exit).
        """
        if self.transport is not None:
            raise InvalidStateError("This WebSocket already has a connection")
        assert self.ws is not None
        if registry is not None:
            self.registry = registry
        self.registry.add(sock, self.ws)
        # The registry's key, held until the end: a plain socket that moves into the loop
        # is detached and would be collected, and the registry's keys are weak.
        self._registered = sock
        self.claimed = True
        head = bytes(head)
        if self.loop.in_loop:
            if not is_gevent_socket(sock):  # a plain or TLS socket: made one of this loop's
                sock = adopt(detach_for_loop(sock, in_loop=True))
            self._attach(sock, head, inline, owns_socket)
            return
        moved = detach_for_loop(sock, in_loop=False)
        self.loop.call_soon_threadsafe(self._attach_moved, moved, head, owns_socket)
        if inline:
            self.wait_closed(None)

    def _attach_moved(self, moved: Any, head: bytes, owns_socket: bool) -> None:
        try:
            sock = adopt(moved)
        except Exception as error:  # the descriptor is unusable: the session ends at once
            self._internal_error(error)
            return
        self._attach(sock, head, False, owns_socket)

    def _attach(self, sock: Any, head: bytes, inline: bool, owns_socket: bool) -> None:
        no_delay(sock)
        self._remote_address = _UNKNOWN  # looked up when first asked for (a syscall)
        options = self.options
        transport = self.transport = self.loop.transport(sock)
        transport.owns_socket = owns_socket
        threshold = options.send_wait_threshold
        transport.high_water = sys.maxsize if threshold is None else threshold
        transport.limit = options.max_buffered_amount
        transport.on_overflow = self._on_overflow
        # An inline session must not return before it ends, so it never parks.
        self._may_park = not inline
        if self.registry.closing:
            # Upgraded by a request that was in progress when the server began
            # to stop: it gets the 1001 too, right after its 101.
            self.close(Reason.SHUTDOWN, text=self.registry.shutdown_reason)
        if inline:
            self.run(head)
        else:
            self.loop.spawn(self.run, head)

    # -- running (in the session's own task) -----------------------------------

    def run(self, head: bytes) -> None:
        """Write the 101, dispatch ``open``, then read until the connection ends."""
        transport = self.transport
        assert transport is not None
        try:
            if self.handshake_response:  # else the server wrote it as its own response
                transport.write(self.handshake_response)
            self.handshake_response = b""  # written: not kept for the connection's life
            conn = self.conn = Connection(
                max_message_size=self.options.max_message_size, trailing_data=head, extension=self.deflate
            )
            self.last_activity = self.opened_at = time.monotonic()
            STATS.opened(self)
            if access_logger.isEnabledFor(logging.INFO):
                self._log_open()
            self.dispatch(Event("open"))
            mailbox, ws = self.mailbox, self.ws
            if mailbox is not None and ws is not None and ws.has_listeners("open"):
                # An open listener in a pool thread may add the message listener: read
                # once it has run, so the first message finds it (as it would in the loop).
                mailbox.wait_until_caught_up()
            if self.handler is not None:
                from takeover._io.handlers import start_handler

                start_handler(self)
            requested = self._close_requested
            if requested is not None:
                self._close_requested = None
                self._start_closing(*requested)
            elif self.options.idle_timeout:
                self._set_timer(self.options.idle_timeout / 2, self._on_idle_timer)
            if head:
                self._handle(conn.receive_data())
        except Exception as error:  # a bug of ours or of a listener's helper: 1011
            self._internal_error(error)
            return
        self._reading()

    def _reading(self) -> None:
        """The read loop, guarded; it also resumes here after being parked."""
        try:
            self._read_loop()
        except Exception as error:  # a bug of ours or of a listener's helper: 1011
            self._internal_error(error)

    def _read_loop(self) -> None:
        conn, transport = self.conn, self.transport
        assert conn is not None and transport is not None
        recv = transport.recv
        receive_data = conn.receive_data
        handle = self._handle
        monotonic = time.monotonic
        park = self._may_park
        while not self.finished:
            data = recv(park)
            if data is None:
                # Idle: end this greenlet; a new one starts when data arrives.
                transport.resume_when_readable(self._reading)
                return
            if not data:
                self._on_eof(conn)
                return
            self.last_activity = monotonic()
            self.bytes_in += len(data)
            events = receive_data(data)
            if events:
                handle(events)
            elif conn.has_data_to_send:
                self.write_control(conn.data_to_send())

    def _handle(self, events: list[ProtocolEvent]) -> None:
        conn, transport, ws = self.conn, self.transport, self.ws
        assert conn is not None and transport is not None and ws is not None
        mailbox = self.mailbox
        for event in events:
            if type(event) is Message:  # type(), not isinstance: the hot path, and exact
                self.messages_in += 1
                data: str | bytes | bytearray = event.data
                if ws.binary_type == "bytearray" and not isinstance(data, str):
                    data = bytearray(data)
                if not ws._listeners.get("message"):
                    self._enqueue(data)  # for receive(), from this loop or any thread
                elif mailbox is not None:
                    mailbox.post(MessageEvent(data))  # the pool runs the listeners, in order
                else:
                    self.run_listeners(MessageEvent(data))
                continue
            # The core queued the pong or close frame: send it in its turn.
            if conn.has_data_to_send:
                self.write_control(conn.data_to_send())
            if type(event) is Close:
                self.close(Reason.PEER_CLOSE, event.code, event.reason)
            elif type(event) is Failure:
                if event.code == CloseCode.INTERNAL_ERROR:
                    logger.error("WebSocket protocol error", exc_info=event.cause)
                else:
                    logger.info("Closing WebSocket with %d: %s", event.code, event.reason)
                self.close(Reason.FAILURE, event.code, event.reason, event.cause)
            # Ping and Pong only count as activity, recorded by the read loop.

    def _enqueue(self, data: str | bytes | bytearray) -> None:
        """Queue a message for the blocking API (no ``message`` listener is set)."""
        if self.ensure_inbox().put(data):  # it waited: reading paused until receive() made room
            self.last_activity = time.monotonic()  # the silence was ours, not the peer's

    def _on_eof(self, conn: Connection) -> None:
        transport = self.transport
        assert transport is not None
        transport.abort()
        # The core says what the end means: nothing after the peer's close or a
        # failure (that event decided), else 1006, expected or not.
        for lost in conn.receive_eof():
            if type(lost) is ConnectionLost:
                self.close(Reason.EOF_AFTER_CLOSE if lost.close_sent else Reason.EOF)

    def _internal_error(self, error: BaseException) -> None:
        logger.exception("WebSocket session failed", exc_info=error)
        self.close(Reason.INTERNAL_ERROR, cause=error)

    # -- triggers: overflow and timers ----------------------------------------

    def _on_overflow(self) -> None:
        """The peer stopped reading: more than ``max_buffered_amount`` bytes were queued.

        Called by the transport in the thread that wrote, with its lock held,
        which may be iterating over many sockets (:func:`~takeover.broadcast`):
        the closing runs later in a greenlet of the loop, so a ``close`` listener
        may change that collection, and the close frame can take the lock.
        """
        if self.finished or self.closing is Reason.OVERFLOW:
            return
        STATS.backpressure_closed()
        logger.warning(
            "Closing WebSocket %s peer=%s with 1008: the peer is not reading"
            " (max_buffered_amount=%s, send_timeout=%s)",
            self.path, self.peer, self.options.max_buffered_amount, self.options.send_timeout,
        )
        self.close(Reason.OVERFLOW)

    def _on_idle_timer(self) -> None:
        self._timer = None
        keepalive.check(self)

