"""The one closing routine of a session, :meth:`Ending.close`, driven by :data:`.closing.CLOSINGS`.

Every way a connection ends — the peer's close, a protocol failure, an
overflow, end of stream, a timer, a shutdown, ``close()`` — goes through
:meth:`Ending.close`, which does what its reason's row says and calls
:meth:`Ending._finish`: CLOSED, the ``error`` then ``close`` events, exactly
once. :class:`~takeover._io.session.Session` is an :class:`Ending`; this
module holds the routine apart from the session's running and sending.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from takeover._io.closing import CLOSINGS, Closing, Flush, Frame, Reason
from takeover._io.stats import STATS
from takeover.events import CloseEvent, ErrorEvent, Event, MessageEvent
from takeover.protocol.connection import State
from takeover.protocol.frames import OP_CLOSE, encode_close, encode_frame

if TYPE_CHECKING:
    from takeover._io.inbox import Inbox
    from takeover._io.listeners import Mailbox
    from takeover._io.loop import Loop, TimerHandle
    from takeover._io.registry import Registry
    from takeover._io.transport import GeventTransport
    from takeover._io.waiting import Waiters
    from takeover.options import WebSocketOptions
    from takeover.protocol.connection import Connection
    from takeover.websocket import WebSocket

__all__ = ["Ending", "access_logger"]

#: One line per upgrade and per close: path, peer, close code, duration; each record also
#: carries its fields as a dict, ``record.takeover`` (written as JSON by :mod:`takeover.accesslog`).
access_logger = logging.getLogger("takeover.access")

# A closing that leaves the session running: an ending may follow it.
_STILL_RUNNING = (None, Reason.LOCAL_CLOSE, Reason.SHUTDOWN)


class Ending:
    """The closing routine (see the module's docstring); the state it reads is the session's."""

    __slots__ = (
        "_close_requested", "_registered", "_timer", "_where", "close_event", "closing", "dispatched_close",
        "finished", "handler", "ws",
    )

    ws: WebSocket | None
    loop: Loop
    options: WebSocketOptions
    conn: Connection | None
    transport: GeventTransport | None
    closing: Reason | None
    finished: bool
    close_event: CloseEvent | None
    inbox: Inbox | None
    mailbox: Mailbox | None
    registry: Registry
    handler: Callable[[WebSocket], object] | None
    opened_at: float
    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    _close_requested: tuple[Reason, int | None, str] | None
    _timer: TimerHandle | None
    _registered: Any
    _state_lock: Any
    _done: Waiters | None

    @property
    def path(self) -> str:
        raise NotImplementedError

    @property
    def peer(self) -> str:
        raise NotImplementedError

    def dispatch(self, event: Event | MessageEvent | CloseEvent | ErrorEvent) -> None:
        raise NotImplementedError

    # -- the one timer: the idle check, or the wait for the peer's close -------

    def _set_timer(self, delay: float, callback: Callable[[], object]) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(max(delay, 0.0), callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_close_timeout(self) -> None:
        self._timer = None
        self.close(Reason.CLOSE_TIMEOUT)

    # -- closing: one routine, driven by CLOSINGS ------------------------------

    def close(
        self, reason: Reason, code: int | None = None, text: str = "", cause: BaseException | None = None
    ) -> None:
        """Close for ``reason`` as its row of :data:`CLOSINGS` says (see the module's docstring).

        In the loop; an ending row (an overflow) may also come from another thread's write:
        the session is CLOSING at once, and the rest runs in the loop.
        """
        row = CLOSINGS[reason]
        if not row.ends:
            self._start_closing(reason, row.code if row.code is not None else code, text)
            return
        with self._state_lock:  # an overflow may come from another thread's write
            if self.finished or self.closing not in _STILL_RUNNING:
                return  # another ending is under way: it alone finishes the session
            self.closing = reason
        if row.own_task or not self.loop.in_loop:
            self.loop.call(self.loop.spawn, self._end, row, code, text, cause)
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
        with transport.lock:
            transport.write_last_locked(conn.send_close(code, text))
            transport.stop_waiting()  # a send() waiting for room discards its message now
        self._set_timer(self.options.close_timeout, self._on_close_timeout)

    def _end(self, row: Closing, code: int | None, text: str, cause: BaseException | None) -> None:
        if self._timer is not None:  # (tested here: a call saved on every close)
            self._cancel_timer()
        if row.code is not None:
            code = row.code
        if row.text is not None:
            text = row.text
        assert code is not None
        transport, conn = self.transport, self.conn
        if transport is not None and conn is not None and row.frame in (Frame.SEND, Frame.REPLACE):
            with transport.lock, contextlib.suppress(Exception):
                frame = conn.send_close(code, text)
                if row.frame is Frame.REPLACE:
                    # The queue held whole frames only, so this one can follow the
                    # one in flight, should the peer read again within close_timeout.
                    frame = frame or encode_frame(OP_CLOSE, encode_close(code, text))
                transport.write_last_locked(frame)
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

    def _linger(self, conn: Connection, transport: GeventTransport) -> None:
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

    def _log_open(self) -> None:
        """The access log's open record (the caller checked that ``access_logger`` logs INFO)."""
        path, peer = self._where = (self.path, self.peer)  # kept for the close's record
        access_logger.info(
            "WebSocket open %s peer=%s", path, peer,
            extra={"takeover": {"event": "open", "path": path, "peer": peer}},
        )

    def _finish(self, close: CloseEvent, error: ErrorEvent | None) -> None:
        """Become CLOSED and dispatch ``error`` (if any) then ``close``, exactly once."""
        with self._state_lock:
            if self.finished:
                return
            self.finished = True
        if self._timer is not None:
            self._cancel_timer()
        if self.handler is not None and self.loop.listener_pool is not None:
            from takeover._io.handlers import HANDLER_THREADS

            self.handler = None
            HANDLER_THREADS.release()  # it never started: its place is free again
        with self._state_lock:  # a first receive() may be making the inbox now: it sees the close
            self.close_event = close
            inbox = self.inbox
        if self.opened_at:
            STATS.closed(self, close.code)  # type: ignore[arg-type]
        if self.opened_at and access_logger.isEnabledFor(logging.INFO):
            path, peer = getattr(self, "_where", None) or (self.path, self.peer)
            duration = time.monotonic() - self.opened_at
            fields = {
                "event": "close", "path": path, "peer": peer, "code": close.code, "clean": close.was_clean,
                "duration": round(duration, 6), "messages_in": self.messages_in,
                "messages_out": self.messages_out, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            }
            access_logger.info(
                "WebSocket closed %s peer=%s code=%d%s duration=%.3fs",
                path, peer, close.code, "" if close.was_clean else " unclean", duration,
                extra={"takeover": fields},
            )
        if error is not None:
            self.dispatch(error)
        self.dispatch(close)
        if inbox is not None:
            inbox.end(close)
        if self.mailbox is None:
            self.close_dispatched()  # else the mailbox says so, once its threads have run it
        self._release()

    def close_dispatched(self) -> None:
        """The ``close`` event has been dispatched: ``wait_closed()`` returns from now on."""
        with self._state_lock:
            self.dispatched_close = True
            if self._done is not None:
                self._done.notify()

    def _release(self) -> None:
        """Drop what ties a closed connection to its socket and to its listeners.

        Listeners that close over the WebSocket (``ws.onmessage = lambda e:
        ws.send(e.data)``) make a cycle that only the garbage collector could
        free. No event follows ``close``.
        """
        registered, self._registered = self._registered, None
        if registered is not None:
            self.registry.discard(registered)
        transport = self.transport
        if transport is not None:
            transport.on_overflow = None  # a bound method of this session: a cycle
        ws, self.ws = self.ws, None
        if ws is not None and self.mailbox is None:  # a mailbox releases them after its close
            ws.clear_listeners()
