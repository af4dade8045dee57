"""The one seam between takeover and its concurrency model.

Everything above this module (the WebSocket, the servers) asks a
:class:`Runtime` to start tasks, make events, queues and timers, and to wrap a
socket in a :class:`~takeover._io.transport.Transport`. Two runtimes exist:
greenlets for gevent sockets, and OS threads for servers that run a thread per
connection (Werkzeug's development server) on plain sockets.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Runtime", "TimerHandle", "runtime_for"]


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Waitable(Protocol):
    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Runtime(Protocol):
    """What the I/O layer needs from a concurrency model."""

    name: str

    def spawn(self, fn: Callable[..., object], *args: Any) -> None: ...

    def event(self) -> Waitable: ...

    def queue(self, maxsize: int) -> Any: ...

    def call_later(self, delay: float, fn: Callable[[], object]) -> TimerHandle: ...

    def transport(self, sock: Any) -> Any: ...


class ThreadRuntime:
    """OS threads and blocking sockets."""

    name = "threads"
    Empty = queue.Empty
    Full = queue.Full

    def spawn(self, fn: Callable[..., object], *args: Any) -> None:
        threading.Thread(target=fn, args=args, daemon=True, name="takeover-ws").start()

    def event(self) -> Waitable:
        return threading.Event()

    def queue(self, maxsize: int) -> queue.Queue[Any]:
        return queue.Queue(maxsize)

    def call_later(self, delay: float, fn: Callable[[], object]) -> TimerHandle:
        timer = threading.Timer(delay, fn)
        timer.daemon = True
        timer.start()
        return timer

    def transport(self, sock: Any) -> Any:
        from takeover._io.transport import ThreadTransport

        return ThreadTransport(sock)


class GeventRuntime:
    """Greenlets and gevent's cooperative sockets."""

    name = "gevent"

    def __init__(self) -> None:
        import gevent
        import gevent.event
        import gevent.queue

        self._gevent = gevent
        self._Event = gevent.event.Event
        self._Queue = gevent.queue.Queue
        self.Empty = gevent.queue.Empty
        self.Full = gevent.queue.Full

    def spawn(self, fn: Callable[..., object], *args: Any) -> None:
        # A raw greenlet: no links, no result, several times cheaper to start
        # than gevent.Greenlet. Everything spawned here catches its own errors.
        self._gevent.spawn_raw(fn, *args)

    def event(self) -> Waitable:
        event: Waitable = self._Event()
        return event

    def queue(self, maxsize: int) -> Any:
        return self._Queue(maxsize)

    def call_later(self, delay: float, fn: Callable[[], object]) -> TimerHandle:
        # A bare loop timer costs far less than a sleeping greenlet per
        # connection; the callback runs in the hub, which must never block,
        # so it only spawns the greenlet that does the work.
        timer = self._gevent.get_hub().loop.timer(delay)
        timer.start(self._gevent.spawn_raw, fn)
        return _GeventTimer(timer)

    def transport(self, sock: Any) -> Any:
        from takeover._io.transport import GeventTransport

        return GeventTransport(sock)


class _GeventTimer:
    __slots__ = ("_timer",)

    def __init__(self, timer: Any) -> None:
        self._timer = timer

    def cancel(self) -> None:
        self._timer.stop()
        self._timer.close()


_gevent_runtime: GeventRuntime | None = None
_thread_runtime = ThreadRuntime()


def gevent_runtime() -> GeventRuntime:
    global _gevent_runtime
    if _gevent_runtime is None:
        _gevent_runtime = GeventRuntime()
    return _gevent_runtime


def is_gevent_socket(sock: Any) -> bool:
    """Whether ``sock`` is one of gevent's cooperative sockets (plain or TLS)."""
    module = type(sock).__module__
    return module.startswith("gevent.") or module == "gevent"


def runtime_for(sock: Any) -> GeventRuntime | ThreadRuntime:
    """Greenlets for a gevent socket, threads for anything else."""
    return gevent_runtime() if is_gevent_socket(sock) else _thread_runtime
