"""``Inbox``: the messages received while no ``message`` listener is set, for ``receive()``.

The session's reader (in its loop) puts each message in; :meth:`Inbox.get`
takes them out in order, from a greenlet of that loop or from any thread (a
blocking handler's, a listener thread, the application's own): the waiting is
:class:`~takeover._io.waiting.Waiters`'. The queue is bounded (``max_queue``):
when it is full, :meth:`Inbox.put` makes the reader wait, so reading pauses
until the application catches up and the peer feels TCP backpressure
(websockets' ``sync/messages.py`` Assembler pauses the same way). ``paused``
tells the idle timer that the silence is ours, not the peer's.

Once the connection is closed, :meth:`Inbox.end` marks the end after the
messages still waiting; from then on every :meth:`Inbox.get` with nothing
left raises :class:`~takeover.errors.ConnectionClosed` with the close's code
and reason.
"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING

from takeover._io.waiting import Waiters, real_lock
from takeover.errors import ConnectionClosed

if TYPE_CHECKING:
    from takeover._io.loop import Loop
    from takeover.events import CloseEvent

__all__ = ["Inbox"]

Data = str | bytes | bytearray


class Inbox:
    """A bounded queue of received messages with an end (see the module's docstring)."""

    __slots__ = ("_close", "_items", "_lock", "_loop", "_max", "_readers", "_room", "_wake_pending", "paused")

    def __init__(self, loop: Loop, max_queue: int) -> None:
        self._items: collections.deque[Data] = collections.deque()
        self._loop = loop
        self._wake_pending = False
        self._max = max(max_queue, 1)
        self._lock = real_lock()
        self._readers = Waiters(loop, self._lock)  # receive() calls waiting for a message
        self._room = Waiters(loop, self._lock)  # the reader, waiting for room
        self._close: CloseEvent | None = None
        #: True while :meth:`put` waits for room (reading is paused by the application).
        self.paused = False

    def put(self, data: Data) -> bool:
        """Queue ``data`` (in the loop); waits while the queue is full. Returns whether it had to wait."""
        items = self._items
        with self._lock:
            full = len(items) >= self._max
            if not full:
                items.append(data)
                if self._readers and not self._wake_pending:
                    self._wake_soon()
                return False
        self.paused = True
        try:
            self._room.wait_for(lambda: len(items) < self._max or self._close is not None, None)
        finally:
            self.paused = False
        with self._lock:
            items.append(data)
            if self._readers and not self._wake_pending:
                self._wake_soon()
        return True

    def _wake_soon(self) -> None:  # in the loop, with the lock held
        # A reader in another thread is woken at the end of this turn of the loop, once
        # every socket it found readable has been read: not in the middle of it, where
        # the woken thread would only contend for the GIL with the loop.
        self._wake_pending = True
        self._loop.run_callback(self._wake)

    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
            self._readers.notify()

    def end(self, close: CloseEvent) -> None:
        """The connection is closed: the end follows what is waiting."""
        with self._lock:
            self._close = close
            self._readers.notify()
            self._room.notify()

    def get(self, timeout: float | None = None) -> Data:
        """The next message; ConnectionClosed after the end, TimeoutError after ``timeout`` seconds."""
        items = self._items
        deadline = None if timeout is None else time.monotonic() + timeout
        for _ in range(1_000_000):  # another reader may take what woke this one
            with self._lock:
                if items:
                    return self._take()
                close = self._close
            if close is not None:
                raise ConnectionClosed(close.code, close.reason, close.was_clean)
            remaining = None if deadline is None else deadline - time.monotonic()
            if not self._readers.wait_for(lambda: bool(items) or self._close is not None, remaining):
                break
        raise TimeoutError(f"No message within {timeout} seconds")

    def _take(self) -> Data:  # with the lock held
        data = self._items.popleft()
        if self._room:
            self._room.notify()
        return data
