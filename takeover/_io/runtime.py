"""The one seam between takeover and its concurrency model.

Everything above this module (the session, the WebSocket, the servers) asks a
:class:`Runtime` to start tasks, make events, queues and timers, and to wrap a
socket in a :class:`Transport`. Two runtimes exist: greenlets for gevent
sockets (one :class:`GeventRuntime` per gevent hub, so hubs in several threads
each keep their own timers and parker), and OS threads for servers that run a
thread per connection (Werkzeug's development server) on plain sockets.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

__all__ = [
    "GeventRuntime",
    "Queue",
    "Runtime",
    "ThreadRuntime",
    "TimerHandle",
    "Transport",
    "Waitable",
    "is_gevent_socket",
    "runtime_for",
]


class TimerHandle(Protocol):
    """A timer started by :meth:`Runtime.call_later`."""

    def cancel(self) -> None: ...


class Waitable(Protocol):
    """A one-shot event (``threading.Event`` or ``gevent.event.Event``)."""

    def set(self) -> None: ...

    def clear(self) -> None: ...

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Queue(Protocol):
    """A bounded FIFO (``queue.Queue`` or ``gevent.queue.Queue``)."""

    def put(self, item: object, block: bool = True, timeout: float | None = None) -> None: ...

    def put_nowait(self, item: object) -> None: ...

    def get(self, block: bool = True, timeout: float | None = None) -> Any: ...

    def empty(self) -> bool: ...

    def full(self) -> bool: ...


class Transport(Protocol):
    """Bytes over one connected socket: read, write without blocking the caller, close.

    Implemented by :class:`~takeover._io.transport.GeventTransport` and
    :class:`~takeover._io.transport.ThreadTransport`; see that module for the
    rules of ``buffered_amount``, ``high_water``, ``limit`` and overflow.
    """

    sock: Any
    closed: bool
    broken: bool
    accepting: bool
    owns_socket: bool
    high_water: int
    limit: int | None
    send_timeout: float | None
    on_overflow: Callable[[], object] | None
    buffered_amount: int

    def recv(self, park: bool = False) -> bytes | None: ...

    def resume_when_readable(self, resume: Callable[[], object]) -> None: ...

    def write(self, data: bytes) -> None: ...

    def write_last(self, data: bytes) -> None: ...

    def flush(self, timeout: float | None) -> bool: ...

    def wait_for_room(self, timeout: float | None) -> bool: ...

    def shutdown_write(self) -> None: ...

    def abort(self) -> None: ...


class Runtime(Protocol):
    """What the I/O layer needs from a concurrency model."""

    name: str
    #: Raised by :meth:`Queue.get` on timeout and :meth:`Queue.put_nowait` when full.
    Empty: type[Exception]
    Full: type[Exception]
    #: Whether tasks may run at the same moment (locks are needed), as OS threads do.
    preemptive: bool

    def spawn(self, fn: Callable[..., object], *args: Any) -> None: ...

    def event(self) -> Waitable: ...

    def queue(self, maxsize: int) -> Queue: ...

    def call_later(self, delay: float, fn: Callable[[], object]) -> TimerHandle: ...

    def transport(self, sock: Any) -> Transport: ...


class ThreadRuntime:
    """OS threads and blocking sockets."""

    name = "threads"
    Empty: type[Exception] = queue.Empty
    Full: type[Exception] = queue.Full
    preemptive = True

    def spawn(self, fn: Callable[..., object], *args: Any) -> None:
        threading.Thread(target=fn, args=args, daemon=True, name="takeover-ws").start()

    def event(self) -> Waitable:
        return threading.Event()

    def queue(self, maxsize: int) -> Queue:
        return queue.Queue(maxsize)

    def call_later(self, delay: float, fn: Callable[[], object]) -> TimerHandle:
        timer = threading.Timer(delay, fn)
        timer.daemon = True
        timer.start()
        return timer

    def transport(self, sock: Any) -> Transport:
        from takeover._io.transport import ThreadTransport

        return ThreadTransport(sock)


class GeventRuntime:
    """Greenlets and gevent's cooperative sockets, on one gevent hub (one per thread)."""

    name = "gevent"
    preemptive = False

    def __init__(self, hub: Any) -> None:
        import gevent
        import gevent.event
        import gevent.queue

        from takeover._io.parker import Parker

        self._spawn_raw = gevent.spawn_raw
        self._Event = gevent.event.Event
        self._Queue = gevent.queue.Queue
        self.Empty: type[Exception] = gevent.queue.Empty
        self.Full: type[Exception] = gevent.queue.Full
        self.loop = hub.loop
        #: Parks this hub's idle readers (see :class:`~takeover._io.parker.Parker`).
        self.parker = Parker(hub.loop)

    def spawn(self, fn: Callable[..., object], *args: Any) -> None:
        # A raw greenlet: no links, no result, several times cheaper to start
        # than gevent.Greenlet. Everything spawned here catches its own errors.
        self._spawn_raw(fn, *args)

    def event(self) -> Waitable:
        event: Waitable = self._Event()
        return event

    def queue(self, maxsize: int) -> Queue:
        made: Queue = self._Queue(maxsize)
        return made

    def call_later(self, delay: float, fn: Callable[[], object]) -> TimerHandle:
        # A bare loop timer costs far less than a sleeping greenlet per
        # connection; the callback runs in the hub, which must never block,
        # so it only spawns the greenlet that does the work.
        timer = self.loop.timer(delay)
        timer.start(self._spawn_raw, fn)
        return _GeventTimer(timer)

    def transport(self, sock: Any) -> Transport:
        from takeover._io.transport import GeventTransport

        return GeventTransport(sock, self.parker)


class _GeventTimer:
    __slots__ = ("_timer",)

    def __init__(self, timer: Any) -> None:
        self._timer = timer

    def cancel(self) -> None:
        self._timer.stop()
        self._timer.close()


# One GeventRuntime per hub: a hub (and its loop) belongs to one thread.
_gevent_runtimes: weakref.WeakKeyDictionary[Any, GeventRuntime] = weakref.WeakKeyDictionary()
_thread_runtime = ThreadRuntime()


def gevent_runtime() -> GeventRuntime:
    """The runtime of the calling thread's gevent hub (made on first use)."""
    import gevent

    hub = gevent.get_hub()
    runtime = _gevent_runtimes.get(hub)
    if runtime is None:
        runtime = _gevent_runtimes[hub] = GeventRuntime(hub)
    return runtime


def is_gevent_socket(sock: Any) -> bool:
    """Whether ``sock`` is one of gevent's cooperative sockets (plain or TLS)."""
    module = type(sock).__module__
    return module.startswith("gevent.") or module == "gevent"


def runtime_for(sock: Any) -> Runtime:
    """Greenlets (of the calling thread's hub) for a gevent socket, threads for anything else."""
    return gevent_runtime() if is_gevent_socket(sock) else _thread_runtime
