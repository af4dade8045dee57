"""Waiting for what a test waits for, bounded: polls with a deadline and a message, and byte counts.

Prefer waiting on the event itself (a ``gevent.event.Event`` set by a
listener, ``wait_closed(timeout)``, a read with a timeout). These are for a
condition nothing signals: :func:`wait_until` polls it every few milliseconds
and fails with a message after ``timeout`` seconds; :func:`holds_within` says
whether it held within ``timeout`` (for something that must *not* happen);
:func:`rounds` bounds a loop in count and time.

The pause between two looks is ``gevent.sleep``: other greenlets run
meanwhile, and in a thread without greenlets it blocks like ``time.sleep``.
"""

from __future__ import annotations

import fcntl
import struct
import termios
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent

__all__ = ["INTERVAL", "holds_within", "rounds", "unread", "wait_until"]

#: Seconds between two looks at a condition.
INTERVAL = 0.005


def holds_within(predicate: Callable[[], bool], timeout: float, interval: float = INTERVAL) -> bool:
    """Whether ``predicate()`` holds within ``timeout`` seconds (looked at every ``interval`` seconds).

    It is looked at once more at the deadline; at most about ``2 * timeout / interval`` looks in all.
    """
    deadline = time.monotonic() + timeout
    for _ in range(2 * int(timeout / interval) + 2):
        if predicate():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        gevent.sleep(min(interval, remaining))
    return bool(predicate())


def wait_until(
    predicate: Callable[[], bool], timeout: float = 5, what: str = "the condition", interval: float = INTERVAL
) -> None:
    """Return once ``predicate()`` holds; AssertionError naming ``what`` after ``timeout`` seconds."""
    if not holds_within(predicate, timeout, interval):
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def rounds(timeout: float, what: str, most: int = 10_000) -> Iterator[int]:
    """The rounds of a loop that ends with ``break``: at most ``most``, for at most ``timeout`` seconds.

    Asked for one more after either bound, it raises AssertionError naming ``what``.
    """
    deadline = time.monotonic() + timeout
    for index in range(most):
        if time.monotonic() > deadline:
            break
        yield index
    raise AssertionError(f"gave up after {timeout} s or {most} rounds waiting for {what}")


def unread(sock: Any) -> int:
    """Bytes in ``sock``'s receive queue: sent to it, not read yet (``FIONREAD``)."""
    return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0])
