"""The life of one WebSocket connection: attach, run, the read loop, keepalive, and closing.

A :class:`Session` is made with its :class:`~takeover.WebSocket` and waits for
a socket. :meth:`Session.attach` (the entry point of every server adapter)
registers the socket, wraps it in a transport and starts :meth:`Session.run`
in a task of its own (a greenlet, or a thread under a threaded server), or
runs it in the caller with ``inline=True``. ``run`` writes the 101, feeds the
``head`` bytes and then everything read to the sans-I/O
:class:`~takeover.protocol.connection.Connection`, and dispatches what comes
out as DOM events on the WebSocket.

Every way a connection ends goes through :meth:`Session.close`, driven by the
table :data:`~takeover._io.closing.CLOSINGS`: one row per reason says whether a close frame is sent,
how long to flush, whether to linger for the peer's close, which code and
``was_clean`` the ``close`` event gets, and whether an ``error`` event comes
first. :meth:`Session._finish` — CLOSED, the events, exactly once — is called
from that routine alone.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from takeover._io import keepalive
from takeover._io.closing import (
    CLOSINGS,
    IDLE_TIMEOUT_REASON,
    NOT_RETURNED,
    OVERFLOW_REASON,
    Closing,
    Flush,
    Frame,
    Reason,
)
from takeover._io.inbox import Inbox
from takeover._io.listeners import run_listeners
from takeover._io.registry import DEFAULT_REGISTRY, Registry
from takeover._io.runtime import Runtime, TimerHandle, Transport, Waitable, runtime_for
from takeover._io.transport import no_delay, peer_address, peer_name
from takeover.errors import InvalidStateError
from takeover.events import CloseEvent, ErrorEvent, Event, MessageEvent
from takeover.options import WebSocketOptions
from takeover.protocol.connection import Close, Connection, ConnectionLost, Failure, Message, State
from takeover.protocol.deflate import PerMessageDeflate
from takeover.protocol.events import Event as ProtocolEvent
from takeover.protocol.frames import OP_CLOSE, CloseCode, encode_close, encode_frame

if TYPE_CHECKING:
    from takeover._flask import FlaskContext
    from takeover._io.listeners import Mailbox
    from takeover._io.loop import IOLoop
    from takeover.websocket import WebSocket

__all__ = ["IDLE_TIMEOUT_REASON", "OVERFLOW_REASON", "Session"]

logger = logging.getLogger("takeover")
#: One line per upgrade and per close: path, peer, close code, duration.
access_logger = logging.getLogger("takeover.access")

_NO_LOCK = contextlib.nullcontext()
_UNKNOWN = object()
# A closing that leaves the session running: an ending may follow it.
_STILL_RUNNING = (None, Reason.LOCAL_CLOSE, Reason.SHUTDOWN)


class Session:
    """One connection of a :class:`~takeover.WebSocket` (see the module's docstring).

    The adapter interface: :meth:`claim` when a server has been handed the
    101 response, :meth:`attach` with the socket and its ``head`` bytes,
    :meth:`abandon` when the response was never returned, and
    :attr:`handshake_response` for a server that writes the 101 itself.
    """

    __slots__ = (
        "_close_requested", "_done", "_lock", "_may_park", "_ping_sent_at", "_remote_address",
        "_sending_paused", "_timer", "claimed", "close_event", "closing", "conn", "context", "deflate",
        "finished", "handshake_response", "inbox", "last_activity", "loop", "mailbox", "opened_at", "options",
        "registry", "response_headers", "runtime", "send_lock", "transport", "url", "ws",
    )

    def __init__(
        self,
        ws: WebSocket,
        *,
        options: WebSocketOptions,
        handshake_response: bytes,
        url: str,
        deflate: PerMessageDeflate | None,
        registry: Registry | None,
    ) -> None:
        #: The WebSocket, until it is CLOSED (it holds this session: the cycle ends then).
        self.ws: WebSocket | None = ws
        self.options = options
        #: The 101 response the session writes before anything else ("" once written,
        #: or when the server writes it: then with :attr:`response_headers`).
        self.handshake_response = handshake_response
        #: The 101's headers, for a server that writes the 101 as its own response.
        self.response_headers: list[tuple[str, str]] = []
        #: Flask's contexts from the upgrade, around each listener call (takeover._flask).
        self.context: FlaskContext | None = None
        self.url = url
        self.deflate = deflate
        self.registry = registry if registry is not None else DEFAULT_REGISTRY
        self.conn: Connection | None = None
        self.transport: Transport | None = None
        self.runtime: Runtime | None = None
        self.inbox: Inbox | None = None
        #: Set when the connection was handed over to takeover's I/O loop thread
        #: (threaded servers): its listeners then run in the pool, through the mailbox.
        self.loop: IOLoop | None = None
        self.mailbox: Mailbox | None = None
        #: Set once a server has been handed the 101 response (or the socket).
        self.claimed = False
        #: The reason of the closing under way (a row of CLOSINGS), once one has begun:
        #: what ``ready_state`` is derived from, with ``conn`` and ``finished``.
        self.closing: Reason | None = None
        self.finished = False
        self.close_event: CloseEvent | None = None
        self._remote_address: Any = None
        # Held from compressing to writing, under threads: frames must leave in
        # the order the compressor saw them (RFC 7692 §7.2.1, context takeover).
        self.send_lock: threading.Lock | None = None
        self.last_activity = 0.0
        self.opened_at = 0.0
        self._ping_sent_at = 0.0
        self._sending_paused = False  # send() waits for room: the reader may be this task
        self._close_requested: tuple[Reason, int | None, str] | None = None
        self._timer: TimerHandle | None = None
        self._done: Waitable | None = None
        self._may_park = False
        # A lock under threads only; greenlets switch only where they wait.
        self._lock: contextlib.AbstractContextManager[Any] = _NO_LOCK

    # -- what the facade asks -----------------------------------------------

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

    @property
    def paused(self) -> bool:
        """Whether reading is paused by us (receive() queue full, listeners behind, send() waiting)."""
        return (
            self._sending_paused
            or (self.inbox is not None and self.inbox.paused)
            or (self.mailbox is not None and self.mailbox.paused)
        )

    def dispatch(self, event: Event | MessageEvent | CloseEvent | ErrorEvent) -> None:
        """Give ``event`` to the listeners: here, or through the mailbox to the listener pool."""
        if self.mailbox is not None:
            self.mailbox.post(event)
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

    def ensure_inbox(self) -> Inbox | None:
        # Made on first use: a WebSocket driven by listeners never needs one.
        if self.inbox is None and self.runtime is not None:
            self.inbox = Inbox(self.runtime, self.options.max_queue)
        return self.inbox

    def wait_for_room(self) -> bool:
        """Wait for the send queue to drain to the high-water mark; False if the close began meanwhile."""
        transport = self.transport
        assert transport is not None
        timeout = self.options.send_timeout
        # While this task waits it may be the reader: the idle timer must not
        # count that silence as the peer's (as when receive()'s queue is full).
        self._sending_paused = True
        try:
            room = transport.wait_for_room(timeout)
        finally:
            self._sending_paused = False
            self.last_activity = time.monotonic()
        if self.ready_state is not State.OPEN:
            return False  # the close started meanwhile: discarded, as the DOM does
        if not room:
            raise TimeoutError(
                f"send() waited {timeout} s for the peer to read: {transport.buffered_amount}"
                f" bytes are still queued (high_water_mark={self.options.high_water_mark}). The"
                " message was not sent; close the connection, drop the message or retry."
            )
        return True

    def send_frame(self, frame: bytes) -> bool:
        """Write an already framed message (see :func:`takeover.broadcast`); False unless OPEN."""
        # OPEN, cheaply: a connection, and no closing begun (CLOSED implies one).
        if self.closing is not None or self.transport is None or self.conn is None:
            return False
        self.transport.write(frame)
        return self.closing is None  # not if this write overflowed the limit

    def send_payload(self, opcode: int, payload: bytes) -> bool:
        """Frame (and compress) an encoded message for this connection alone; False unless OPEN."""
        if self.ready_state is not State.OPEN:
            return False
        conn, transport = self.conn, self.transport
        assert conn is not None and transport is not None
        with self.send_lock or _NO_LOCK:
            transport.write(conn.send_message(opcode, payload))
        return self.ready_state is State.OPEN

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping (at most 125 bytes) if OPEN."""
        if self.ready_state is State.OPEN:
            assert self.conn is not None and self.transport is not None
            self.transport.write(self.conn.send_ping(payload))

    def wait_closed(self, timeout: float | None) -> bool:
        """Block until CLOSED; False if ``timeout`` passed first."""
        if self.finished or self.runtime is None:
            return self.finished
        if self._done is None:
            self._done = self.runtime.event()
        return bool(self._done.wait(timeout))

    # -- the adapter interface ----------------------------------------------

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
        self.close(Reason.ABANDONED)

    def refuse(self, message: str) -> None:
        """The server cannot hand the connection over (it was answered 501): 1006, with ``message``."""
        if not self.finished and self.transport is None:
            self.close(Reason.UNSUPPORTED_SERVER, text=message)

    def attach(self, sock: Any, head: bytes = b"", *, inline: bool = False, owns_socket: bool = True) -> None:
        """Take over ``sock``, whose ``head`` bytes were already read past the request.

        Starts :meth:`run` in a task of its own and returns at once, so that
        listeners attached right after :func:`~takeover.upgrade_websocket`
        returns see ``open``; with ``inline`` it runs in the calling greenlet or
        thread instead and returns when the connection ends. Without
        ``owns_socket`` the socket is shut down at the end but left for its
        server to close.
        """
        if self.transport is not None:
            raise InvalidStateError("This WebSocket already has a connection")
        assert self.ws is not None
        self.registry.add(sock, self.ws)
        self.claimed = True
        no_delay(sock)
        self._remote_address = _UNKNOWN  # looked up when first asked for (a syscall)
        runtime = self.runtime = runtime_for(sock)
        options = self.options
        transport = self.transport = runtime.transport(sock)
        transport.owns_socket = owns_socket
        threshold = options.send_wait_threshold
        transport.high_water = sys.maxsize if threshold is None else threshold
        transport.limit = options.max_buffered_amount
        transport.send_timeout = options.send_timeout
        transport.on_overflow = self._on_overflow
        # An inline session must not return before it ends, so it never parks.
        self._may_park = not inline
        if runtime.preemptive:
            self._lock = threading.Lock()
            if self.deflate is not None:
                self.send_lock = threading.Lock()
            # Threads would race to make it on first use; greenlets never do.
            self.ensure_inbox()
        if self.registry.closing:
            # Upgraded by a request that was in progress when the server began
            # to stop: it gets the 1001 too, right after its 101.
            self.close(Reason.SHUTDOWN, text=self.registry.shutdown_reason)
        if inline:
            self.run(bytes(head))
        else:
            runtime.spawn(self.run, bytes(head))

    # -- running (in the session's own task) -----------------------------------

    def run(self, head: bytes) -> None:
        """Write the 101, dispatch ``open``, then read until the connection ends."""
        transport = self.transport
        assert transport is not None
        try:
            transport.write(self.handshake_response)
            self.handshake_response = b""  # written: not kept for the connection's life
            conn = self.conn = Connection(
                max_message_size=self.options.max_message_size, trailing_data=head, extension=self.deflate
            )
            self.last_activity = self.opened_at = time.monotonic()
            if access_logger.isEnabledFor(logging.INFO):
                access_logger.info("WebSocket open %s peer=%s", self.path, self.peer)
            self.dispatch(Event("open"))
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
            events = receive_data(data)
            if events:
                handle(events)
            elif conn.has_data_to_send:
                transport.write(conn.data_to_send())

    def _handle(self, events: list[ProtocolEvent]) -> None:
        conn, transport, ws = self.conn, self.transport, self.ws
        assert conn is not None and transport is not None and ws is not None
        mailbox = self.mailbox
        for event in events:
            if type(event) is Message:  # type(), not isinstance: the hot path, and exact
                data: str | bytes | bytearray = event.data
                if ws.binary_type == "bytearray" and not isinstance(data, str):
                    data = bytearray(data)
                if mailbox is not None:
                    mailbox.post(MessageEvent(data))  # the pool runs the listeners, in order
                elif ws._listeners.get("message"):
                    self.run_listeners(MessageEvent(data))
                else:
                    self._enqueue(data)
                continue
            # The core queued the pong or close frame: send it in its turn.
            if conn.has_data_to_send:
                transport.write(conn.data_to_send())
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
        inbox = self.ensure_inbox()
        assert inbox is not None
        if inbox.put(data):  # it waited: reading paused until receive() made room
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

    # -- closing: one routine, driven by CLOSINGS ------------------------------

    def close(
        self, reason: Reason, code: int | None = None, text: str = "", cause: BaseException | None = None
    ) -> None:
        """Close for ``reason`` as its row of :data:`CLOSINGS` says (see the module's docstring)."""
        row = CLOSINGS[reason]
        if not row.ends:
            self._start_closing(reason, row.code if row.code is not None else code, text)
            return
        with self._lock:  # threads: the reader, a timer and a writer may get here together
            if self.finished or self.closing not in _STILL_RUNNING:
                return  # another ending is under way: it alone finishes the session
            self.closing = reason
        if row.own_task and self.runtime is not None:
            self.runtime.spawn(self._end, row, code, text, cause)
        else:
            self._end(row, code, text, cause)

    def _start_closing(self, reason: Reason, code: int | None, text: str) -> None:
        """Send our close frame and wait up to close_timeout for the answer (§7.1.2)."""
        conn, transport = self.conn, self.transport
        if conn is None or transport is None:
            if not self.finished:
                # Before the 101 is written: the handshake completes, then closes.
                self._close_requested = (reason, code, text)
            return
        if conn.state is not State.OPEN or self.closing is not None:
            return
        self.closing = reason
        # A close frame is never refused by max_buffered_amount (it is at most
        # 131 bytes): it must follow the queue, or the peer never learns the code.
        transport.write_last(conn.send_close(code, text))
        self._set_timer(self.options.close_timeout, self._on_close_timeout)

    def _end(self, row: Closing, code: int | None, text: str, cause: BaseException | None) -> None:
        self._cancel_timer()
        if row.code is not None:
            code = row.code
        if row.text is not None:
            text = row.text
        assert code is not None
        transport, conn = self.transport, self.conn
        if transport is not None and conn is not None:
            if row.frame is Frame.SEND:
                with contextlib.suppress(Exception):
                    transport.write_last(conn.send_close(code, text))
            elif row.frame is Frame.REPLACE:
                # The queue held whole frames only, so this one can follow the
                # one in flight, should the peer read again within close_timeout.
                frame = conn.send_close(code, text) or encode_frame(OP_CLOSE, encode_close(code, text))
                transport.write_last(frame)
        close = CloseEvent(code, text, row.was_clean)
        error = None if row.error is None else ErrorEvent(row.error or text, cause)
        if row.events_first:
            self._finish(close, error)
        if transport is not None:
            if row.flush is Flush.CLOSE_TIMEOUT:
                transport.flush(self.options.close_timeout)
            elif row.flush is Flush.SHORT:
                transport.flush(1.0)
            if row.linger and conn is not None and conn.close_expected():
                self._linger(conn, transport)
            transport.abort()
        if not row.events_first:
            self._finish(close, error)

    def _linger(self, conn: Connection, transport: Transport) -> None:
        """Send FIN, and read until the peer's close frame, its EOF or ``close_timeout`` (§7.1.7)."""
        transport.shutdown_write()  # after the flush: our close frame has gone
        self._set_timer(self.options.close_timeout, transport.abort)
        for _ in range(1024):  # bounded: a peer that keeps talking is cut off
            data = transport.recv()
            if not data:
                conn.receive_eof()
                break
            conn.receive_data(data)  # frames are skipped until the close (§7.1.7)
            if not conn.close_expected():  # its answering close: done (§7.1.1)
                break
        self._cancel_timer()

    def _finish(self, close: CloseEvent, error: ErrorEvent | None) -> None:
        """Become CLOSED and dispatch ``error`` (if any) then ``close``, exactly once."""
        with self._lock:
            if self.finished:
                return
            self.finished = True
        self._cancel_timer()
        self.close_event = close
        if self.opened_at and access_logger.isEnabledFor(logging.INFO):
            access_logger.info(
                "WebSocket closed %s peer=%s code=%d%s duration=%.3fs",
                self.path, self.peer, close.code, "" if close.was_clean else " unclean",
                time.monotonic() - self.opened_at,
            )
        if error is not None:
            self.dispatch(error)
        self.dispatch(close)
        if self.inbox is not None:
            self.inbox.end(close)
        if self._done is not None:
            self._done.set()
        self._release()

    def _release(self) -> None:
        """Drop what ties a closed connection to its socket and to its listeners.

        Listeners that close over the WebSocket (``ws.onmessage = lambda e:
        ws.send(e.data)``) make a cycle that only the garbage collector could
        free. No event follows ``close``.
        """
        transport = self.transport
        if transport is not None:
            self.registry.discard(transport.sock)
            transport.on_overflow = None  # a bound method of this session: a cycle
        ws, self.ws = self.ws, None
        if ws is not None and self.mailbox is None:  # a mailbox releases them after its close
            ws._listeners = {}
            ws._handlers = {}

    # -- triggers: overflow and timers ----------------------------------------

    def _on_overflow(self) -> None:
        """The peer stopped reading: more than ``max_buffered_amount`` bytes were queued.

        Called by the transport in the task that wrote, which may be iterating
        over many sockets (:func:`~takeover.broadcast`): the closing runs in a
        task of its own, so a ``close`` listener may change that collection.
        """
        if self.finished or self.closing is Reason.OVERFLOW:
            return
        logger.warning(
            "Closing WebSocket %s peer=%s with 1008: the peer is not reading"
            " (max_buffered_amount=%s, send_timeout=%s)",
            self.path, self.peer, self.options.max_buffered_amount, self.options.send_timeout,
        )
        self.close(Reason.OVERFLOW)

    def _set_timer(self, delay: float, callback: Callable[[], object]) -> None:
        self._cancel_timer()
        assert self.runtime is not None
        self._timer = self.runtime.call_later(max(delay, 0.0), callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_idle_timer(self) -> None:
        self._timer = None
        keepalive.check(self)

    def _on_close_timeout(self) -> None:
        self._timer = None
        self.close(Reason.CLOSE_TIMEOUT)
