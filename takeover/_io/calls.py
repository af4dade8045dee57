"""Calls handed to one gevent hub from any thread: a queue and libev's async watcher.

A gevent hub belongs to one thread; another thread may not touch it, its
sockets or its greenlets. What it may do is append to a deque and call the
watcher's ``send()`` (libev's ``ev_async_send``, safe from any thread): the
hub then wakes and starts a greenlet per call. Every
:class:`~takeover._io.loop.Loop` takes calls from other threads this way.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["CallQueue", "wait_for_call"]

logger = logging.getLogger("takeover")
T = TypeVar("T")


class CallQueue:
    """Calls from any thread, each run in a greenlet of ``hub`` (made in the hub's thread)."""

    def __init__(self, hub: Any) -> None:
        self._calls: collections.deque[tuple[Callable[..., object], tuple[Any, ...]]] = collections.deque()
        self._async = hub.loop.async_()
        self._async.start(self._drain)

    def post(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` in a greenlet of the hub, from any thread."""
        self._calls.append((fn, args))
        self._async.send()

    def _drain(self) -> None:  # in the hub itself: only start greenlets
        import gevent

        calls = self._calls
        for _ in range(len(calls)):
            fn, args = calls.popleft()
            gevent.spawn_raw(_guarded, fn, args)

    def stop(self) -> None:
        self._async.stop()


def wait_for_call(post: Callable[..., None], fn: Callable[..., T], *args: Any, timeout: float | None) -> T:
    """``fn(*args)`` run through ``post`` (in another thread's hub), waited for from this thread."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def call() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as error:
            future.set_exception(error)

    post(call)
    return future.result(timeout)


def _guarded(fn: Callable[..., object], args: tuple[Any, ...]) -> None:
    try:
        fn(*args)
    except Exception:
        logger.exception("Exception in a call handed to a gevent hub")
