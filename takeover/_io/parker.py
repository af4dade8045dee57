"""Parking idle readers: one repeating timer per event loop instead of a timeout per wait.

A greenlet waiting for data keeps its stack (about 8 KB measured here), which
is most of an idle connection's cost. A reader that has waited ``interval``
seconds without data is *parked*: :class:`Park` is thrown into it, its
``recv`` returns None and its greenlet ends; the transport then starts a new
greenlet when data arrives (:meth:`GeventTransport.resume_when_readable`).

Registering a wait is a dict insert, far cheaper than arming a timer per
message. Each gevent hub (one per thread) has its own :class:`Parker`, made by
its :class:`~takeover._io.loop.Loop`: a timer belongs to one loop,
and a greenlet can only be thrown into from its own thread.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["PARK_AFTER", "Park", "Parker"]

#: Seconds a reader waits for data before it is parked.
PARK_AFTER = 0.5


class Park(BaseException):
    """Thrown into a reader that waited ``PARK_AFTER`` seconds for data."""


class Parker:
    """The parking timer of one event loop (see the module's docstring)."""

    __slots__ = ("_getcurrent", "_loop", "_timer", "interval", "signal", "waiting")

    def __init__(self, loop: Any, interval: float = PARK_AFTER) -> None:
        import gevent

        self.interval = interval
        self.signal = Park()
        #: The readers waiting now: key -> (since, greenlet).
        self.waiting: dict[object, tuple[float, Any]] = {}
        self._getcurrent = gevent.getcurrent
        self._loop = loop
        self._timer: Any = None

    def wait_readable(self, key: object, sock: Any) -> bool:
        """Wait for gevent socket ``sock`` to be readable; False if parked instead."""
        if self._timer is None:  # started on first use, in the loop's own thread
            self._timer = self._loop.timer(self.interval, self.interval, ref=False)
            self._timer.start(self._sweep)
        waiting = self.waiting
        waiting[key] = (time.monotonic(), self._getcurrent())
        try:
            sock._wait(sock._read_event)
        except Park as signal:
            if signal is not self.signal:
                raise
            signal.__traceback__ = None  # it would keep this greenlet's frames alive
            return False
        finally:
            waiting.pop(key, None)
        return True

    def _sweep(self) -> None:  # in the hub, like gevent.Timeout's expiry
        deadline = time.monotonic() - self.interval
        for key, (since, reader) in list(self.waiting.items()):
            if since <= deadline and self.waiting.pop(key, None) is not None:
                reader.throw(self.signal)
