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
as work arrives, of which as few as keep up are awake (see
:class:`ListenerPool`). While all of them run listeners that block, the
events of other WebSockets wait their turn.
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
#: Seconds ready mailboxes may wait with no thread taking any before another thread is woken.
STALL = 0.002


class ListenerPool:
    """Threads that run the events of many mailboxes, each mailbox in order.

    As few threads as keep up are awake: a thread takes ready mailboxes one
    after another, and another is woken only when none is awake, or when the
    ready ones have waited :data:`STALL` seconds without any being taken (the
    awake threads are blocked in listeners). A turn of the loop that reads
    fifty sockets then costs one wake-up, not fifty, and a listener that blocks
    still delays only its own WebSocket (by at most a few :data:`STALL` for the
    others, until a thread is free for them).
    """

    def __init__(self, max_threads: int = DEFAULT_LISTENER_THREADS) -> None:
        if max_threads < 1:
            raise ValueError(f"listener_threads must be 1 or more, not {max_threads!r}")
        self.max_threads = max_threads
        self._ready: collections.deque[Mailbox] = collections.deque()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a mailbox
        self._awake = 0  # threads not waiting (or woken, about to look)
        self._taken = 0  # mailboxes taken so far: the stall check's measure of progress
        self._seen = -1  # _taken at the stall check before
        # One lock for the queue and the counts: a thread takes a mailbox, or goes to
        # sleep, in the same step as it changes them.
        self._ready_or_idle = threading.Condition(threading.Lock())
        self._batch: list[Mailbox] = []  # mailboxes made ready in this turn of the loop
        self._watch: Any = None  # the loop's stall timer, running while mailboxes wait
        self._sized = False

    def size_once(self, max_threads: int) -> None:
        """Allow up to ``max_threads`` threads: the first WebSocket's ``listener_threads`` sizes the pool."""
        if not self._sized:
            self._sized = True
            if max_threads < 1:
                raise ValueError(f"listener_threads must be 1 or more, not {max_threads!r}")
            self.max_threads = max_threads

    def state(self) -> dict[str, int]:
        """Its threads, how many are busy, and the mailboxes waiting for one (read without the lock)."""
        return {
            "threads": len(self._threads), "busy": self._awake, "queued": len(self._ready),
            "max_threads": self.max_threads,
        }

    def schedule_from_loop(self, mailbox: Mailbox, loop: Loop) -> None:
        """Queue ``mailbox`` at the end of this turn of ``loop``, with the others made ready in it.

        One turn of the loop reads many sockets: their mailboxes go to the
        threads together, under one lock and at most one wake-up, not one each.
        """
        batch = self._batch
        batch.append(mailbox)
        if len(batch) == 1:
            loop.run_callback(self._flush, loop)

    def _flush(self, loop: Loop) -> None:  # in the hub, at the end of a turn of the loop
        batch, self._batch = self._batch, []
        self.schedule(*batch)
        if self._watch is None:
            self._watch = loop.repeat(STALL, self._check_stall)
            self._watch.pause()
        if self._ready:
            self._watch.resume()

    def _check_stall(self) -> None:  # in the hub, every STALL seconds while mailboxes wait
        with self._ready_or_idle:
            if not self._ready:
                self._watch.pause()
                self._seen = -1
                return
            if self._taken == self._seen:  # nothing taken since the last look: the awake are blocked
                self._wake_one()
            self._seen = self._taken

    def schedule(self, *mailboxes: Mailbox) -> None:
        """Queue ``mailboxes``; wake a thread if none is awake to take them."""
        with self._ready_or_idle:
            self._ready.extend(mailboxes)
            if self._awake == 0:
                self._wake_one()

    def _wake_one(self) -> None:  # with the lock held
        if self._idle:
            self._idle -= 1
            self._awake += 1
            self._ready_or_idle.notify()
        elif len(self._threads) < self.max_threads:
            self._awake += 1
            thread = threading.Thread(
                target=self._work, name=f"takeover-listener-{len(self._threads) + 1}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        ready, condition = self._ready, self._ready_or_idle
        while True:
            with condition:
                while not ready:
                    self._awake -= 1
                    self._idle += 1
                    condition.wait()  # whoever wakes this thread counts it awake again
                mailbox = ready.popleft()
                self._taken += 1
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
        """Queue ``event`` (in the loop's thread); waits while ``limit`` events are waiting.

        An event nobody listens to, with nothing before it, is done at once: no
        thread is woken for it (an ``open`` or ``close`` without listeners, as
        most handshakes have).
        """
        ws = self.ws
        if ws is None:
            return
        with self._lock:
            events = self._events
            if not events and not self._scheduled and not ws._listeners.get(event.type):
                if event.type == "close":
                    self._closed(ws)
                return
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

    def _closed(self, ws: WebSocket) -> None:
        # No event follows close: drop the listeners (a cycle through them otherwise)
        # and this mailbox's hold on the WebSocket; wait_closed() returns from now on.
        session = self.session
        ws.clear_listeners()
        self.ws = None
        self.session = None
        if session is not None:
            session.close_dispatched()

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
                self._closed(ws)
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
