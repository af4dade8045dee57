"""``Waiters``: wait until something holds, from a loop's greenlets or from any other thread.

A session lives in one loop (:mod:`takeover._io.loop`), but its application
code may be elsewhere: a listener thread waits for room to send, a blocking
handler's thread waits in ``receive()``, a request thread waits for the close.
A greenlet of the loop must wait without blocking the hub (a gevent event);
another thread must wait without touching the hub (a lock of its own, which
the notifier releases). One object serves both, so each waiting place in the
I/O layer is written once.

The predicate is checked under the caller's lock, the one the notifier holds
while it changes what the predicate reads: no wake-up is lost between the
check and the wait (the same rule as :class:`threading.Condition`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from takeover._io.loop import Loop

__all__ = ["Waiters", "real_lock"]


def _original_allocate_lock() -> Callable[[], Any]:
    from gevent import monkey

    allocate: Callable[[], Any] = monkey.get_original("_thread", "allocate_lock")
    return allocate


#: ``_thread.allocate_lock`` as it was before any monkey-patching: an OS lock even in a
#: monkey-patched process (never held across a greenlet switch).
real_lock: Callable[[], Any] = _original_allocate_lock()


class Waiters:
    """Those waiting for a condition guarded by ``lock``; :meth:`notify` wakes them all."""

    __slots__ = ("_lock", "_loop", "_waiting")

    def __init__(self, loop: Loop, lock: Any) -> None:
        self._loop = loop
        self._lock = lock
        self._waiting: list[Any] = []  # gevent events (loop greenlets) and held OS locks (threads)

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until ``predicate()`` (read under the lock) is true; False after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        in_loop = self._loop.in_loop
        for _ in range(1_000_000):  # each pass follows a notify
            with self._lock:
                if predicate():
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if in_loop:
                    waiter = self._loop.event()
                else:
                    waiter = real_lock()
                    waiter.acquire()
                self._waiting.append(waiter)
            if in_loop:
                woken = waiter.wait(remaining)
            else:
                woken = waiter.acquire(True, -1 if remaining is None else remaining)
            if not woken:
                with self._lock:
                    if waiter in self._waiting:
                        self._waiting.remove(waiter)
        return False

    def notify(self) -> None:
        """Wake every waiter (call with the lock held, right after changing what they wait for)."""
        waiting, self._waiting = self._waiting, []
        loop = self._loop
        for waiter in waiting:
            if hasattr(waiter, "release"):
                waiter.release()
            else:
                loop.call(waiter.set)
