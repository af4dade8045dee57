"""``takeover.WebSocket``: a browser/Deno-like WebSocket over a taken-over socket.

One task per connection (a greenlet, or a thread under a threaded server)
writes the 101, feeds the ``head`` bytes and then everything read from the
socket to the sans-I/O :class:`~takeover.protocol.connection.Connection`, and
dispatches what comes out as DOM-style events. Sending does not block on a
slow peer: frames go to the transport's queue and ``buffered_amount`` counts
them. Two bounds keep a peer that stops reading from growing that queue
without end: :meth:`WebSocket.send` waits while more than ``high_water_mark``
bytes are queued (up to ``send_timeout`` seconds), and a connection with more
than ``max_buffered_amount`` bytes waiting is closed with 1008.

Messages go to ``message`` listeners; when there are none they are queued for
the blocking API (:meth:`WebSocket.receive`, ``for message in ws``), up to
``max_queue`` of them, after which reading pauses until they are consumed.
"""

from __future__ import annotations

import contextlib
import logging
import socket as _socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

from takeover._io.runtime import GeventRuntime, ThreadRuntime, TimerHandle, runtime_for
from takeover.errors import ConnectionClosed, InvalidStateError
from takeover.events import (
    CloseEvent,
    ErrorEvent,
    Event,
    EventTarget,
    MessageEvent,
    handler_attribute,
)
from takeover.protocol.connection import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Close,
    Connection,
    Failure,
    Message,
    State,
    check_close_arguments,
)
from takeover.protocol.deflate import PerMessageDeflate
from takeover.protocol.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_TEXT,
    RSV1,
    CloseCode,
    encode_close,
    encode_frame,
)

__all__ = ["WebSocket", "broadcast"]

logger = logging.getLogger("takeover")
#: One line per upgrade and per close: path, peer, close code, duration.
access_logger = logging.getLogger("takeover.access")

_END = object()  # queued for the blocking API once the connection is closed
_NO_LOCK = contextlib.nullcontext()
_UNKNOWN = object()
IDLE_TIMEOUT_REASON = "No response from ping frame."
OVERFLOW_REASON = "Send buffer full: the peer is not reading"
#: ``send()`` waits while more than this many bytes are queued for the peer.
DEFAULT_HIGH_WATER_MARK = 1024 * 1024
#: A connection with more than this many bytes queued behind the frame in flight is closed with 1008.
DEFAULT_MAX_BUFFERED_AMOUNT = 16 * 1024 * 1024
NOT_RETURNED = "Upgrade response was not returned from callback"

# The WebSocket each socket was handed to, so a second upgrade fails clearly.
_by_socket: weakref.WeakKeyDictionary[Any, WebSocket] = weakref.WeakKeyDictionary()


def websocket_for(sock: Any) -> WebSocket | None:
    """The WebSocket ``sock`` was handed to, if any."""
    return _by_socket.get(sock)


# Callbacks waiting for a socket to become a WebSocket (servers count and close them).
_watchers: weakref.WeakKeyDictionary[Any, Callable[[WebSocket], object]] = weakref.WeakKeyDictionary()


def watch_socket(sock: Any, callback: Callable[[WebSocket], object]) -> None:
    """Call ``callback(ws)`` when ``sock`` is handed to a WebSocket (at once if it was)."""
    ws = _by_socket.get(sock)
    if ws is not None:
        callback(ws)
    else:
        _watchers[sock] = callback


def open_websockets() -> list[WebSocket]:
    """Every WebSocket of this process that is not CLOSED yet."""
    return [ws for ws in list(_by_socket.values()) if ws.ready_state != State.CLOSED]


def close_all(websockets: Iterable[WebSocket], code: int, reason: str, timeout: float) -> None:
    """Start the close handshake of each, then wait up to ``timeout`` seconds in all."""
    websockets = list(websockets)
    deadline = time.monotonic() + timeout
    for ws in websockets:
        ws.close(code, reason)
    for ws in websockets:
        ws.wait_closed(max(deadline - time.monotonic(), 0.0))


class WebSocket(EventTarget):
    """The server end of a WebSocket, shaped like the browser's and Deno's.

    Create it with :func:`takeover.upgrade_websocket`. ``ready_state`` goes
    ``CONNECTING`` → ``OPEN`` → ``CLOSING`` → ``CLOSED``; listen with
    :meth:`add_event_listener` or the ``onopen``/``onmessage``/``onclose``/
    ``onerror`` attributes, or read with :meth:`receive` and iteration.
    """

    __slots__ = (
        "__weakref__", "_claimed", "_close_event", "_close_requested", "_conn", "_deflate", "_done",
        "_end_pending", "_finish_lock", "_finished", "_handshake_response", "_high_water",
        "_last_activity", "_max_message_size", "_max_queue", "_may_park", "_on_finish", "_opened_at",
        "_overflowing", "_paused", "_ping_sent_at", "_queue", "_remote_address", "_runtime",
        "_send_lock", "_state", "_timer", "_transport", "binary_type", "close_timeout", "extensions",
        "high_water_mark", "idle_timeout", "max_buffered_amount", "protocol", "send_timeout", "url",
    )

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
        idle_timeout: float | None = 30,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        close_timeout: float = 10,
        max_queue: int = 64,
        deflate: PerMessageDeflate | None = None,
        high_water_mark: int | None = DEFAULT_HIGH_WATER_MARK,
        send_timeout: float | None = 30,
        max_buffered_amount: int | None = DEFAULT_MAX_BUFFERED_AMOUNT,
    ) -> None:
        super().__init__()
        check_backpressure_options(high_water_mark, send_timeout, max_buffered_amount)
        #: :meth:`send` waits while more than this many bytes are queued (None: never waits).
        self.high_water_mark = high_water_mark
        # With both set, send() waits at the lower one rather than overflow the
        # hard limit; high_water_mark=None never waits (the hard limit then applies).
        self._high_water = (
            sys.maxsize if high_water_mark is None
            else min(high_water_mark, sys.maxsize if max_buffered_amount is None else max_buffered_amount)
        )
        #: Seconds :meth:`send` waits for the queue to drain before raising TimeoutError.
        self.send_timeout = send_timeout
        #: Bytes that may be queued behind the frame being written; more closes with 1008.
        self.max_buffered_amount = max_buffered_amount
        self.url = url
        #: The subprotocol chosen in the handshake, or ``""``.
        self.protocol = protocol
        #: The extensions negotiated in the handshake, as the response's
        #: ``Sec-WebSocket-Extensions`` states them (``"permessage-deflate"``
        #: with its parameters), or ``""``.
        self.extensions = extensions or (deflate.response if deflate is not None else "")
        self._deflate = deflate
        # Held from compressing to writing, under threads: frames must leave in
        # the order the compressor saw them (RFC 7692 §7.2.1, context takeover).
        self._send_lock: threading.Lock | None = None
        #: ``"bytes"`` (the default) or ``"bytearray"``: the type of binary ``MessageEvent.data``.
        self.binary_type = "bytes"
        self.idle_timeout = idle_timeout or None
        self.close_timeout = close_timeout
        self._handshake_response = handshake_response
        self._max_message_size = max_message_size
        self._max_queue = max_queue
        self._state = State.CONNECTING
        self._conn: Connection | None = None
        self._transport: Any = None
        self._runtime: GeventRuntime | ThreadRuntime | None = None
        self._queue: Any = None
        self._timer: TimerHandle | None = None
        self._last_activity = 0.0
        self._ping_sent_at = 0.0
        self._close_requested: tuple[int | None, str] | None = None
        self._finished = False
        # A lock under threads only; greenlets switch only where they wait.
        self._finish_lock: contextlib.AbstractContextManager[Any] = _NO_LOCK
        self._close_event: CloseEvent | None = None
        self._opened_at = 0.0
        self._paused = False  # reading paused by a full receive() queue
        self._overflowing = False  # closing with 1008: the close events are on their way
        self._end_pending = False  # the end marker still has to be queued
        self._remote_address: Any = None
        self._done: Any = None
        self._may_park = False
        # Set once a server has been handed the 101 response (or the socket).
        self._claimed = False
        #: Called with this WebSocket once it is CLOSED (servers count connections with it).
        self._on_finish: list[Callable[[WebSocket], object]] = []

    # -- state ------------------------------------------------------------

    @property
    def ready_state(self) -> State:
        """``CONNECTING`` (0), ``OPEN`` (1), ``CLOSING`` (2) or ``CLOSED`` (3)."""
        return self._state

    @property
    def remote_address(self) -> Any:
        """The peer's address (``(host, port)`` for TCP), or None before the takeover."""
        if self._remote_address is _UNKNOWN:
            self._remote_address = _peer_address(self._transport.sock)
        return self._remote_address

    @property
    def _peer(self) -> str:
        return _peer_name(self.remote_address)

    @property
    def attached(self) -> bool:
        """Whether a socket has been handed to this WebSocket yet."""
        return self._transport is not None

    @property
    def buffered_amount(self) -> int:
        """Bytes of sent frames not yet handed to the operating system (exact)."""
        transport = self._transport
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
        state = self._state
        if state is not State.OPEN:
            if state is State.CONNECTING:
                raise InvalidStateError("Failed to send: the WebSocket is still CONNECTING")
            return
        if self._transport.buffered_amount > self._high_water and not self._wait_for_room():
            return
        conn = self._conn
        assert conn is not None
        if self._send_lock is not None:
            with self._send_lock:
                self._send_locked(conn, data)
            return
        if isinstance(data, str):
            frame = conn.send_text(data)
        elif isinstance(data, (bytes, bytearray, memoryview)):
            frame = conn.send_binary(data)
        else:
            raise TypeError(f"send() takes str or a bytes-like object, not {type(data).__name__}")
        self._transport.write(frame)

    def _wait_for_room(self) -> bool:
        """Wait for the queue to drain to ``high_water_mark``; False if the close started meanwhile."""
        # While this task waits it may be the reader: the idle timer must not
        # count that silence as the peer's (as when receive()'s queue is full).
        self._paused = True
        try:
            room = self._transport.wait_for_room(self.send_timeout)
        finally:
            self._paused = False
            self._last_activity = time.monotonic()
        if self._state is not State.OPEN:
            return False  # the close started meanwhile: discarded, as the DOM does
        if not room:
            raise TimeoutError(
                f"send() waited {self.send_timeout} s for the peer to read: {self.buffered_amount}"
                f" bytes are still queued (high_water_mark={self.high_water_mark}). The message was"
                " not sent; close the connection, drop the message or retry."
            )
        return True

    def _send_locked(self, conn: Connection, data: str | bytes | bytearray | memoryview) -> None:
        # send()'s body, for the lock; send() keeps its own copy inline (the hot path).
        if isinstance(data, str):
            frame = conn.send_text(data)
        elif isinstance(data, (bytes, bytearray, memoryview)):
            frame = conn.send_binary(data)
        else:
            raise TypeError(f"send() takes str or a bytes-like object, not {type(data).__name__}")
        self._transport.write(frame)

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping (at most 125 bytes); the pong arrives as activity, not as an event."""
        if self._state is State.OPEN:
            assert self._conn is not None
            self._transport.write(self._conn.send_ping(payload))

    def close(self, code: int | None = None, reason: str = "") -> None:
        """Start the close handshake (RFC 6455 §7.1.2).

        ``code`` is 1000, 3000–4999 or another code an endpoint may send, and
        ``reason`` at most 123 UTF-8 bytes, else :class:`ValueError`. The TCP
        connection is closed when the peer answers, or after ``close_timeout``.
        """
        check_close_arguments(code, reason)
        state = self._state
        if state is State.CONNECTING:
            # Closing before the 101 is written: the handshake completes, then closes.
            self._close_requested = (code, reason)
            self._state = State.CLOSING
            return
        if state is not State.OPEN:
            return
        assert self._conn is not None
        self._state = State.CLOSING
        # A close frame is never refused by max_buffered_amount (it is at most
        # 131 bytes): it must follow the queue, or the peer never learns the code.
        self._transport.write_last(self._conn.send_close(code, reason))
        self._set_timer(self.close_timeout, self._on_close_timeout)

    # -- the blocking API -------------------------------------------------

    def receive(self, timeout: float | None = None) -> str | bytes | bytearray:
        """Wait for the next message (queued when no ``message`` listener is set).

        Raises :class:`ConnectionClosed` once the connection is closed and the
        queue is empty, and :class:`TimeoutError` after ``timeout`` seconds.
        """
        queue = self._ensure_queue()
        if queue is None:
            raise InvalidStateError("receive() needs a connected WebSocket")
        assert self._runtime is not None
        if self._finished and queue.empty():
            queue.put(_END)
        try:
            item = queue.get(timeout=timeout)
        except self._runtime.Empty:
            raise TimeoutError(f"No message within {timeout} seconds") from None
        if self._end_pending and item is not _END:
            # The end marker did not fit when the connection closed; now it does.
            self._end_pending = False
            queue.put_nowait(_END)
        if item is _END:
            queue.put(_END)  # every later call sees the end too
            event = self._close_event
            assert event is not None
            raise ConnectionClosed(event.code, event.reason, event.was_clean)
        data: str | bytes | bytearray = item
        return data

    def __iter__(self) -> Iterator[str | bytes | bytearray]:
        """Messages until the connection closes, then the iteration ends."""
        while True:
            try:
                yield self.receive()
            except ConnectionClosed:
                return

    # -- the session (runs in its own greenlet or thread) -----------------

    def _attach(self, sock: Any, head: bytes, *, inline: bool = False, owns_socket: bool = True) -> None:
        """Take over ``sock``: the hook servers and socket mode use.

        Starts the session task and returns at once, so listeners attached
        right after :func:`upgrade_websocket` returns see ``open``; with
        ``inline`` the session runs in the calling greenlet or thread instead
        and this returns when it ends. Without ``owns_socket`` the socket is
        shut down at the end but left for its server to close.
        """
        if self._transport is not None:
            raise InvalidStateError("This WebSocket already has a connection")
        if sock in _by_socket:
            raise InvalidStateError("Socket has already been upgraded to a WebSocket")
        _by_socket[sock] = self
        self._claimed = True
        _no_delay(sock)
        self._remote_address = _UNKNOWN  # looked up when first asked for (a syscall)
        watcher = _watchers.pop(sock, None)
        if watcher is not None:
            watcher(self)
        runtime = runtime_for(sock)
        self._runtime = runtime
        if self._deflate is not None and isinstance(runtime, ThreadRuntime):
            self._send_lock = threading.Lock()
        transport = self._transport = runtime.transport(sock)
        transport.owns_socket = owns_socket
        transport.high_water = self._high_water
        transport.limit = self.max_buffered_amount
        transport.send_timeout = self.send_timeout
        transport.on_overflow = self._on_overflow
        # An inline session must not return before it ends, so it never parks.
        self._may_park = not inline
        if isinstance(runtime, ThreadRuntime):
            # Threads race to make it on first use; greenlets never do (no preemption).
            self._queue = runtime.queue(self._max_queue)
            self._finish_lock = threading.Lock()
        if inline:
            self._run(bytes(head))
        else:
            runtime.spawn(self._run, bytes(head))

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until the WebSocket is CLOSED; False if ``timeout`` passed first."""
        if self._finished or self._runtime is None:
            return self._state is State.CLOSED
        if self._done is None:
            self._done = self._runtime.event()
        return bool(self._done.wait(timeout))

    def _ensure_queue(self) -> Any:
        # Made on first use: a WebSocket driven by listeners never needs one.
        if self._queue is None and self._runtime is not None:
            self._queue = self._runtime.queue(self._max_queue)
        return self._queue

    def _abandon(self) -> None:
        """The 101 response was never returned (Deno logs this and closes)."""
        if self._finished or self._claimed or self._transport is not None:
            return
        logger.error(NOT_RETURNED)
        self._finish(CloseEvent(CloseCode.ABNORMAL, "", False), ErrorEvent(NOT_RETURNED))

    def _run(self, head: bytes) -> None:
        transport = self._transport
        try:
            transport.write(self._handshake_response)
            self._handshake_response = b""  # written: not kept for the connection's life
            conn = self._conn = Connection(
                max_message_size=self._max_message_size, trailing_data=head, extension=self._deflate
            )
            if self._state is State.CONNECTING:
                self._state = State.OPEN
            self._last_activity = self._opened_at = time.monotonic()
            if access_logger.isEnabledFor(logging.INFO):
                access_logger.info("WebSocket open %s peer=%s", self._path, self._peer)
            self.dispatch_event(Event("open"))
            if self._close_requested is not None:
                self._state = State.OPEN
                self.close(*self._close_requested)
            elif self.idle_timeout:
                self._set_timer(self.idle_timeout / 2, self._on_idle_timer)
            if head:
                self._handle(conn.receive_data())
        except Exception as error:  # a bug of ours or of a listener's helper: 1011
            logger.exception("WebSocket session failed")
            self._abort(CloseCode.INTERNAL_ERROR, "Internal error", error)
            return
        self._reading()

    def _reading(self) -> None:
        """The read loop, guarded; it also resumes here after being parked."""
        try:
            self._read_loop(self._conn, self._transport)
        except Exception as error:  # a bug of ours or of a listener's helper: 1011
            logger.exception("WebSocket session failed")
            self._abort(CloseCode.INTERNAL_ERROR, "Internal error", error)

    def _read_loop(self, conn: Any, transport: Any) -> None:
        recv = transport.recv
        receive_data = conn.receive_data
        handle = self._handle
        monotonic = time.monotonic
        park = self._may_park
        while not self._finished:
            data = recv(park)
            if data is None:
                # Idle: end this greenlet; a new one starts when data arrives.
                transport.resume_when_readable(self._reading)
                return
            if not data:
                self._on_eof(conn)
                return
            self._last_activity = monotonic()
            events = receive_data(data)
            if events:
                handle(events)
            elif conn.has_data_to_send:
                transport.write(conn.data_to_send())

    def _handle(self, events: list[Any]) -> None:
        conn = self._conn
        assert conn is not None
        for event in events:
            kind = type(event)
            if kind is Message:
                data = event.data
                if self.binary_type == "bytearray" and not isinstance(data, str):
                    data = bytearray(data)
                if self._listeners.get("message"):
                    self.dispatch_event(MessageEvent(data))
                else:
                    self._enqueue(data)
                continue
            # The core queued the pong or close frame: send it in its turn.
            if conn.has_data_to_send:
                self._transport.write(conn.data_to_send())
            if kind is Close:
                self._on_peer_close(event)
            elif kind is Failure:
                self._on_failure(event)
            # Ping and Pong only count as activity, recorded by the read loop.

    def _enqueue(self, data: str | bytes | bytearray) -> None:
        """Queue a message for the blocking API (no ``message`` listener is set)."""
        queue = self._ensure_queue()
        if queue.full():
            # Backpressure: reading pauses until receive() makes room. The
            # silence is ours, not the peer's, so the idle timer must not count it.
            self._paused = True
            try:
                queue.put(data)
            finally:
                self._paused = False
                self._last_activity = time.monotonic()
        else:
            queue.put(data)

    def _on_peer_close(self, close: Close) -> None:
        # §7.1.1: after the close handshake the server closes the TCP connection first.
        self._state = State.CLOSING
        transport = self._transport
        transport.flush(self.close_timeout)
        transport.abort()
        self._finish(CloseEvent(close.code, close.reason, True))

    def _on_failure(self, failure: Failure) -> None:
        # §7.1.7: the close frame with the code is queued; let the peer read it
        # and answer before the TCP connection goes.
        if failure.code == CloseCode.INTERNAL_ERROR:
            logger.error("WebSocket protocol error", exc_info=failure.cause)
        else:
            logger.info("Closing WebSocket with %d: %s", failure.code, failure.reason)
        self._state = State.CLOSING
        self._linger()
        self._finish(
            CloseEvent(failure.code, failure.reason, False),
            ErrorEvent(failure.reason, failure.cause),
        )

    def _on_overflow(self) -> None:
        """The peer stopped reading: more than ``max_buffered_amount`` bytes were queued.

        Called by the transport in the task that wrote, which may be iterating
        over many sockets (:func:`broadcast`); the events are dispatched from a
        task of their own, so a ``close`` listener may change that collection.
        """
        with self._finish_lock:  # threads: the reader may be finishing at this moment
            if self._finished or self._overflowing:
                return
            self._overflowing = True
        self._state = State.CLOSING
        conn = self._conn
        if conn is not None:
            # §7.4.1: 1008, a message that violates the endpoint's policy. The
            # queue held whole frames only, so the close frame can follow the
            # one in flight, should the peer read again within close_timeout.
            # A close frame of ours that was queued went with the queue: this
            # one replaces it.
            frame = conn.send_close(CloseCode.POLICY_VIOLATION, OVERFLOW_REASON) or encode_frame(
                OP_CLOSE, encode_close(CloseCode.POLICY_VIOLATION, OVERFLOW_REASON)
            )
            self._transport.write_last(frame)
        logger.warning(
            "Closing WebSocket %s peer=%s with 1008: the peer is not reading"
            " (max_buffered_amount=%s, send_timeout=%s)",
            self._path, self._peer, self.max_buffered_amount, self.send_timeout,
        )
        assert self._runtime is not None
        self._runtime.spawn(self._close_overflowed)

    def _close_overflowed(self) -> None:
        self._finish(
            CloseEvent(CloseCode.POLICY_VIOLATION, OVERFLOW_REASON, False), ErrorEvent(OVERFLOW_REASON)
        )
        transport = self._transport
        transport.flush(self.close_timeout)
        transport.abort()

    def _linger(self) -> None:
        """Flush, send FIN, and read until the peer's close frame, its EOF or ``close_timeout``."""
        transport = self._transport
        transport.flush(self.close_timeout)
        transport.shutdown_write()
        self._set_timer(self.close_timeout, transport.abort)
        conn = self._conn
        assert conn is not None
        for _ in range(1024):  # bounded: a peer that keeps talking is cut off
            data = transport.recv()
            if not data:
                break
            conn.receive_data(data)
            if conn.close_received:  # its answering close: done (§7.1.1)
                break
        transport.abort()

    def _on_eof(self, conn: Connection) -> None:
        self._transport.abort()
        if conn.close_received or self._overflowing:
            return
        if self._state is State.CLOSING and self._close_event is None and not self._finished:
            # We sent a close and the peer hung up without answering.
            self._finish(CloseEvent(CloseCode.ABNORMAL, "", False))
            return
        self._finish(
            CloseEvent(CloseCode.ABNORMAL, "", False),
            ErrorEvent("The connection was closed without a close frame"),
        )

    def _abort(self, code: int, reason: str, error: BaseException | None) -> None:
        transport = self._transport
        conn = self._conn
        if conn is not None and not conn.close_sent and transport is not None:
            try:
                transport.write_last(conn.send_close(code, reason))
            except Exception:
                pass
            transport.flush(1.0)
        if transport is not None:
            transport.abort()
        self._finish(CloseEvent(code, reason, False), ErrorEvent(reason, error))

    def _finish(self, close: CloseEvent, error: ErrorEvent | None = None) -> None:
        """Become CLOSED and dispatch ``error`` (if any) then ``close``, exactly once."""
        # Threads may get here together (the reader at EOF, a timer, a writer
        # that overflowed); exactly one goes on.
        with self._finish_lock:
            if self._finished:
                return
            self._finished = True
        self._state = State.CLOSED
        self._cancel_timer()
        self._close_event = close
        if self._opened_at and access_logger.isEnabledFor(logging.INFO):
            access_logger.info(
                "WebSocket closed %s peer=%s code=%d%s duration=%.3fs",
                self._path,
                self._peer,
                close.code,
                "" if close.was_clean else " unclean",
                time.monotonic() - self._opened_at,
            )
        if error is not None:
            self.dispatch_event(error)
        self.dispatch_event(close)
        if self._queue is not None and self._runtime is not None:
            try:
                self._queue.put_nowait(_END)
            except self._runtime.Full:  # queued messages first: receive() adds it later
                self._end_pending = True
        for callback in self._on_finish:
            callback(self)
        if self._done is not None:
            self._done.set()
        self._release()

    def _release(self) -> None:
        """Drop what ties a closed WebSocket to its socket and to its listeners.

        The socket registry would otherwise keep every WebSocket alive (its
        value holds its key), and listeners that close over the WebSocket
        (``ws.onmessage = lambda e: ws.send(e.data)``) make a cycle that only
        the garbage collector could free. No event follows ``close``.
        """
        transport = self._transport
        if transport is not None:
            _by_socket.pop(transport.sock, None)
            _watchers.pop(transport.sock, None)
            transport.on_overflow = None  # a bound method of this WebSocket: a cycle
        self._listeners = {}
        self._handlers = {}
        self._on_finish = []

    # -- timers -----------------------------------------------------------

    def _set_timer(self, delay: float, callback: Any) -> None:
        self._cancel_timer()
        assert self._runtime is not None
        self._timer = self._runtime.call_later(max(delay, 0.0), callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_idle_timer(self) -> None:
        """Deno's idleTimeout: ping after idle/2 of silence, close 1001 after idle."""
        self._timer = None
        if self._state is not State.OPEN or self.idle_timeout is None:
            return
        now = time.monotonic()
        half = self.idle_timeout / 2
        if self._paused:
            self._set_timer(half, self._on_idle_timer)
            return
        silence = now - self._last_activity
        if silence >= self.idle_timeout:
            self._on_idle_timeout()
        elif silence >= half:
            if self._ping_sent_at <= self._last_activity:
                self._ping_sent_at = now
                self.ping()
            self._set_timer(self.idle_timeout - silence, self._on_idle_timer)
        else:
            self._set_timer(half - silence, self._on_idle_timer)

    def _on_idle_timeout(self) -> None:
        conn = self._conn
        assert conn is not None
        self._state = State.CLOSING
        self._transport.write_last(conn.send_close(CloseCode.GOING_AWAY, IDLE_TIMEOUT_REASON))
        self._transport.flush(1.0)
        self._transport.abort()
        self._finish(
            CloseEvent(CloseCode.GOING_AWAY, IDLE_TIMEOUT_REASON, False),
            ErrorEvent(IDLE_TIMEOUT_REASON),
        )

    def _on_close_timeout(self) -> None:
        self._timer = None
        self._transport.abort()
        self._finish(CloseEvent(CloseCode.ABNORMAL, "", False))

    @property
    def _path(self) -> str:
        return urlsplit(self.url).path or "/"

    def _send_frame(self, frame: bytes) -> bool:
        """Write an already framed message (see :func:`broadcast`); False unless OPEN."""
        if self._state is not State.OPEN:
            return False
        self._transport.write(frame)
        return self._state is State.OPEN  # not if this write overflowed the limit

    def _send_payload(self, opcode: int, payload: bytes) -> bool:
        """Frame (and compress) an encoded message for this connection alone; False unless OPEN."""
        if self._state is not State.OPEN:
            return False
        conn = self._conn
        assert conn is not None
        if self._send_lock is not None:
            with self._send_lock:
                self._transport.write(conn.send_message(opcode, payload))
        else:
            self._transport.write(conn.send_message(opcode, payload))
        return self._state is State.OPEN  # not if this write overflowed the limit

    def __repr__(self) -> str:
        return f"<WebSocket {self.url or '?'} {self._state.name}>"


def check_backpressure_options(
    high_water_mark: int | None, send_timeout: float | None, max_buffered_amount: int | None
) -> None:
    """Raise ValueError for a negative size or a timeout that is not positive."""
    if high_water_mark is not None and high_water_mark < 0:
        raise ValueError(f"high_water_mark must be 0 or more bytes, or None, not {high_water_mark}")
    if send_timeout is not None and send_timeout <= 0:
        raise ValueError(f"send_timeout must be a positive number of seconds or None, not {send_timeout}")
    if max_buffered_amount is not None:
        if max_buffered_amount < 0:
            raise ValueError(
                f"max_buffered_amount must be 0 or more bytes, or None, not {max_buffered_amount}"
            )


def _no_delay(sock: Any) -> None:
    # Messages are written whole: Nagle's algorithm only delays them (ws,
    # websockets and asyncio set TCP_NODELAY too). Measured: broadcast to 200
    # clients went from 83k to 325k deliveries/s.
    try:
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass  # not TCP (a socketpair, a Unix socket)


def _peer_address(sock: Any) -> Any:
    try:
        return sock.getpeername()
    except (OSError, ValueError):
        return None


def _peer_name(peer: Any) -> str:
    if peer is None:
        return "-"
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer) or "-"


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
    for ws in websockets:
        deflate = ws._deflate
        if deflate is None or len(payload) < deflate.threshold:
            if plain is None:
                plain = encode_frame(opcode, payload)
            sent += ws._send_frame(plain)
            continue
        key = deflate.shared_key
        if key is None:
            sent += ws._send_payload(opcode, payload)
            continue
        if ws.ready_state is not State.OPEN:
            continue
        frame = shared.get(key)
        if frame is None:
            frame = shared[key] = encode_frame(opcode, deflate.compress(payload), rsv=RSV1)
        sent += ws._send_frame(frame)
    return sent
