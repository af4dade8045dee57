"""``Inbox``: the messages received while no ``message`` listener is set, for ``receive()``.

The reader puts each message in; :meth:`Inbox.get` takes them out in order.
The queue is bounded (``max_queue``): when it is full, :meth:`Inbox.put`
blocks the reader, so reading pauses until the application catches up and the
peer feels TCP backpressure (websockets' ``sync/messages.py`` Assembler pauses
the same way). ``paused`` tells the idle timer that the silence is ours, not
the peer's.

Once the connection is closed, :meth:`Inbox.end` queues an end marker after
the messages still waiting; from then on every :meth:`Inbox.get` raises
:class:`~takeover.errors.ConnectionClosed` with the close's code and reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from takeover.errors import ConnectionClosed

if TYPE_CHECKING:
    from takeover._io.runtime import Queue, Runtime
    from takeover.events import CloseEvent

__all__ = ["Inbox"]

Data = str | bytes | bytearray
_END = object()  # queued once the connection is closed


class Inbox:
    """A bounded queue of received messages with an end (see the module's docstring)."""

    __slots__ = ("_close", "_empty", "_end_pending", "_full", "_queue", "paused")

    def __init__(self, runtime: Runtime, max_queue: int) -> None:
        self._queue: Queue = runtime.queue(max_queue)
        self._empty = runtime.Empty
        self._full = runtime.Full
        self._close: CloseEvent | None = None
        self._end_pending = False  # the end marker did not fit: get() adds it later
        #: True while :meth:`put` waits for room (reading is paused by the application).
        self.paused = False

    def put(self, data: Data) -> bool:
        """Queue ``data``; blocks while the queue is full (backpressure on the reader).

        Returns whether it had to wait.
        """
        queue = self._queue
        if not queue.full():
            queue.put(data)
            return False
        self.paused = True
        try:
            queue.put(data)
        finally:
            self.paused = False
        return True

    def end(self, close: CloseEvent) -> None:
        """The connection is closed: queue the end behind what is waiting."""
        self._close = close
        try:
            self._queue.put_nowait(_END)
        except self._full:  # queued messages first: get() adds it once there is room
            self._end_pending = True

    def get(self, timeout: float | None = None) -> Data:
        """The next message; ConnectionClosed after the end, TimeoutError after ``timeout`` seconds."""
        queue = self._queue
        if self._close is not None and queue.empty():
            queue.put(_END)
        try:
            item = queue.get(timeout=timeout)
        except self._empty:
            raise TimeoutError(f"No message within {timeout} seconds") from None
        if self._end_pending and item is not _END:
            self._end_pending = False
            queue.put_nowait(_END)
        if item is _END:
            queue.put(_END)  # every later call sees the end too
            close = self._close
            assert close is not None
            raise ConnectionClosed(close.code, close.reason, close.was_clean)
        data: Data = item
        return data
