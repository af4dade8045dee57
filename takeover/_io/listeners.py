"""``ListenerPool``: the listeners of handed-over WebSockets, in a bounded pool of threads.

A handed-over connection is read in the :class:`~takeover._io.loop.IOLoop`'s
thread, which must never block; its listeners are application code that may
(a database query, ``time.sleep(1)``). Each WebSocket gets a :class:`Mailbox`:
the loop posts its events there, and the pool's threads run them, one
WebSocket's events in order and never two of them at once, so a listener that
blocks delays only its own WebSocket's later events. A WebSocket with
``limit`` events waiting pauses its reader until the pool has caught up to
half of that (backpressure: the client is then slowed down by TCP).

The pool has at most ``max_threads`` threads (``listener_threads``), started
as work arrives. While all of them run listeners that block, the events of
other WebSockets wait their turn.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import TYPE_CHECKING, Any

from takeover.options import DEFAULT_LISTENER_THREADS

if TYPE_CHECKING:
    from takeover._flask import FlaskContext
    from takeover._io.loop import IOLoop
    from takeover.websocket import WebSocket

__all__ = ["DEFAULT_LISTENER_THREADS", "ListenerPool", "Mailbox"]

logger = logging.getLogger("takeover")

#: Events one WebSocket may have waiting before its reader pauses.
DEFAULT_MAILBOX_LIMIT = 64
_BATCH = 32  # events a thread runs for one WebSocket before it lets another go first


class ListenerPool:
    """Threads that run the events of many mailboxes, each mailbox in order."""

    def __init__(self, max_threads: int = DEFAULT_LISTENER_THREADS) -> None:
        if max_threads < 1:
            raise ValueError(f"listener_threads must be 1 or more, not {max_threads!r}")
        self.max_threads = max_threads
        self._ready: collections.deque[Mailbox] = collections.deque()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a mailbox
        # One lock for the queue and the idle count: a thread takes a mailbox and stops
        # being idle in the same step, so schedule() never counts on a thread that is busy.
        self._ready_or_idle = threading.Condition(threading.Lock())

    def schedule(self, mailbox: Mailbox) -> None:
        """Queue ``mailbox``; wake an idle thread, or start one when all are busy and there is room."""
        with self._ready_or_idle:
            self._ready.append(mailbox)
            if len(self._ready) > self._idle and len(self._threads) < self.max_threads:
                thread = threading.Thread(
                    target=self._work, name=f"takeover-listener-{len(self._threads) + 1}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            else:
                self._ready_or_idle.notify()

    def _work(self) -> None:
        ready, condition = self._ready, self._ready_or_idle
        while True:
            with condition:
                while not ready:
                    self._idle += 1
                    try:
                        condition.wait()
                    finally:
                        self._idle -= 1
                mailbox = ready.popleft()
            mailbox.run()


class Mailbox:
    """The events of one WebSocket waiting for the pool, in order (see the module's docstring)."""

    __slots__ = ("_events", "_lock", "_loop", "_pool", "_room", "_scheduled", "context", "limit", "ws")

    def __init__(
        self, ws: WebSocket, pool: ListenerPool, loop: IOLoop, limit: int = DEFAULT_MAILBOX_LIMIT,
        context: FlaskContext | None = None,
    ) -> None:
        #: The WebSocket, until its ``close`` event has been dispatched.
        self.ws: WebSocket | None = ws
        #: Flask's contexts to run its listeners in (the session's, see takeover._flask).
        self.context = context
        self.limit = limit
        self._pool = pool
        self._loop = loop
        self._events: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._room: Any = None  # a gevent Event the reader waits on while the mailbox is full

    @property
    def paused(self) -> bool:
        """Whether the reader waits for the listeners to catch up."""
        return self._room is not None

    def post(self, event: Any) -> None:
        """Queue ``event`` (in the loop's thread); waits while ``limit`` events are waiting."""
        with self._lock:
            self._events.append(event)
            waiting = len(self._events)
            schedule = not self._scheduled
            self._scheduled = True
        if schedule:
            self._pool.schedule(self)
        if waiting >= self.limit and event.type == "message":
            import gevent.event

            room = self._room = gevent.event.Event()
            try:
                with self._lock:
                    behind = len(self._events) > self.limit // 2
                if behind:  # else the pool caught up before it could see the room
                    room.wait()
            finally:
                self._room = None

    def run(self) -> None:
        """Dispatch waiting events (in a pool thread), a batch at a time."""
        for _ in range(_BATCH):
            with self._lock:
                if not self._events:
                    self._scheduled = False
                    break
                event = self._events.popleft()
                waiting = len(self._events)
            ws = self.ws
            if ws is None:
                continue  # closed: nothing follows the close event
            run_listeners(ws, event, self.context)
            if event.type == "close":
                # No event follows close: drop the listeners (a cycle through them
                # otherwise) and this mailbox's hold on the WebSocket.
                ws._listeners = {}
                ws._handlers = {}
                self.ws = None
            room = self._room
            if room is not None and waiting <= self.limit // 2:
                self._loop.call_soon_threadsafe(room.set)
        else:
            with self._lock:
                more = bool(self._events)
                self._scheduled = more
            if more:
                self._pool.schedule(self)  # others go first: fairness between WebSockets


def run_listeners(ws: WebSocket, event: Any, context: FlaskContext | None) -> None:
    """Call ``ws``'s listeners of ``event`` (in Flask's contexts of its upgrade, if any and if listened to).

    ``dispatch_event`` logs and goes on past a listener that raises.
    """
    if context is None or not ws._listeners.get(event.type):
        ws.dispatch_event(event)
    else:
        context.call(ws.dispatch_event, event)
