"""``ListenerPool``: the listeners of handed-over WebSockets, in a bounded pool of threads.

A connection of the I/O loop (:func:`~takeover._io.loop.io_loop`) is read in its
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

from takeover._io.waiting import Waiters, real_lock
from takeover.options import DEFAULT_LISTENER_THREADS

if TYPE_CHECKING:
    from takeover._flask import FlaskContext
    from takeover._io.loop import Loop
    from takeover._io.session import Session
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
        self._batch: list[Mailbox] = []  # mailboxes made ready in this turn of the loop
        self._sized = False

    def size_once(self, max_threads: int) -> None:
        """Allow up to ``max_threads`` threads: the first WebSocket's ``listener_threads`` sizes the pool."""
        if not self._sized:
            self._sized = True
            if max_threads < 1:
                raise ValueError(f"listener_threads must be 1 or more, not {max_threads!r}")
            self.max_threads = max_threads

    @property
    def queued(self) -> int:
        """Mailboxes waiting for a thread."""
        return len(self._ready)

    def schedule_from_loop(self, mailbox: Mailbox, loop: Loop) -> None:
        """Queue ``mailbox`` at the end of this turn of ``loop``, with the others made ready in it.

        One turn of the loop reads many sockets: their mailboxes go to the
        threads together, under one lock and one wake-up, not one each.
        """
        batch = self._batch
        batch.append(mailbox)
        if len(batch) == 1:
            loop.run_callback(self._flush)

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        self.schedule(*batch)

    def schedule(self, *mailboxes: Mailbox) -> None:
        """Queue ``mailboxes``; wake idle threads, or start threads while all are busy and there is room."""
        with self._ready_or_idle:
            ready = self._ready
            ready.extend(mailboxes)
            wake = min(len(mailboxes), self._idle)
            if wake:
                self._ready_or_idle.notify(wake)
            # Each idle thread takes one: start more while the ready outnumber them.
            while len(ready) > self._idle and len(self._threads) < self.max_threads:
                thread = threading.Thread(
                    target=self._work, name=f"takeover-listener-{len(self._threads) + 1}", daemon=True
                )
                self._threads.append(thread)
                self._idle += 1  # counted idle until it looks for its first mailbox
                thread.start()

    def _work(self) -> None:
        ready, condition = self._ready, self._ready_or_idle
        with condition:
            self._idle -= 1  # started as idle by schedule(): it is about to look for work
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

    __slots__ = ("_events", "_lock", "_loop", "_pool", "_room", "_scheduled", "limit", "session", "ws")

    def __init__(
        self, ws: WebSocket, pool: ListenerPool, loop: Loop, limit: int = DEFAULT_MAILBOX_LIMIT,
        session: Session | None = None,
    ) -> None:
        #: The WebSocket, until its ``close`` event has been dispatched.
        self.ws: WebSocket | None = ws
        #: The session whose Flask contexts the listeners run in (see takeover._flask).
        self.session = session
        self.limit = limit
        self._pool = pool
        self._loop = loop
        self._events: collections.deque[Any] = collections.deque()
        self._lock = real_lock()
        self._scheduled = False
        self._room = Waiters(loop, self._lock)  # the reader, while the mailbox is full or catching up

    @property
    def paused(self) -> bool:
        """Whether the reader waits for the listeners to catch up."""
        return bool(self._room)

    def post(self, event: Any) -> None:
        """Queue ``event`` (in the loop's thread); waits while ``limit`` events are waiting."""
        with self._lock:
            events = self._events
            events.append(event)
            waiting = len(events)
            schedule = not self._scheduled
            self._scheduled = True
        if schedule:
            self._pool.schedule_from_loop(self, self._loop)
        if waiting >= self.limit and event.type == "message":
            half = self.limit // 2
            self._room.wait_for(lambda: len(self._events) <= half, None)

    def wait_until_caught_up(self, timeout: float | None = 10.0) -> None:
        """Wait (in the loop's reader) until every event posted so far has been run."""
        self._room.wait_for(lambda: not self._scheduled, timeout)

    def run(self) -> None:
        """Dispatch waiting events (in a pool thread), a batch at a time."""
        events, lock, room = self._events, self._lock, self._room
        session = self.session
        for _ in range(_BATCH):
            with lock:
                if not events:
                    self._scheduled = False
                    if room:
                        room.notify()
                    break
                event = events.popleft()
                if room and len(events) <= self.limit // 2:
                    room.notify()
            ws = self.ws
            if ws is None:
                continue  # closed: nothing follows the close event
            run_listeners(ws, event, session.context if session is not None else None)
            if event.type == "close":
                # No event follows close: drop the listeners (a cycle through them
                # otherwise) and this mailbox's hold on the WebSocket.
                ws.clear_listeners()
                self.ws = None
                if session is not None:
                    session.close_dispatched()
                self.session = None
        else:
            with lock:
                more = bool(events)
                self._scheduled = more
                if not more and room:
                    room.notify()
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
