"""``Loop``: where a WebSocket lives. One gevent hub, and what other threads may ask of it.

Every session lives in exactly one loop for its whole life, chosen when it is
made (:func:`loop_for_caller`), and every read, timer and close of it runs
there:

* under gevent (``takeover serve``, gunicorn's gevent workers, uWSGI's
  ``--gevent``, gevent.pywsgi, a monkey-patched script), the hub of the thread
  that upgraded;
* on threaded and process servers (gunicorn sync and gthread, uWSGI threads
  and processes, Werkzeug, waitress-like plain threads), the process's *I/O
  loop*: a gevent hub in a daemon thread of its own (:func:`io_loop`),
  started on first use and stopped at exit after its WebSockets are closed
  with 1001. Its sessions' listeners run in a
  :class:`~takeover._io.listeners.ListenerPool`, since application code may
  block and the loop must not. The process needs no monkey-patching: the hub
  belongs to the loop's thread alone.

A hub belongs to one OS thread. Other threads never touch it; they hand it
calls (:meth:`Loop.call_soon_threadsafe`, :meth:`Loop.run_sync`), which
:class:`~takeover._io.calls.CallQueue` passes through libev's async watcher.
The hub's rooms (:mod:`takeover.hub`) live in the same loop as their
WebSockets, through the same object.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import gevent
import greenlet  # type: ignore[import-untyped]
from gevent import monkey

from takeover._io.adopt import is_gevent_socket
from takeover._io.calls import CallQueue, wait_for_call
from takeover._io.registry import Registry

if TYPE_CHECKING:
    from takeover._io.listeners import ListenerPool
    from takeover._io.parker import Parker
    from takeover._io.transport import GeventTransport
    from takeover.websocket import WebSocket

__all__ = [
    "EXIT_TIMEOUT", "Loop", "TimerHandle", "current_loop", "inside_gevent", "io_loop", "loop_for_caller",
    "loop_of", "stop_io_loop",
]

logger = logging.getLogger("takeover")
T = TypeVar("T")

#: Seconds the exit hook waits for the I/O loop's WebSockets' close handshakes.
EXIT_TIMEOUT = 5.0


class TimerHandle(Protocol):
    """A timer started by :meth:`Loop.call_later`."""

    def cancel(self) -> None: ...


def _real_get_ident() -> Callable[[], int]:
    # Under monkey-patching threading.get_ident names the greenlet; a hub belongs to the OS thread.
    from gevent import monkey

    get_ident: Callable[[], int] = monkey.get_original("_thread", "get_ident")
    return get_ident


class Loop:
    """One gevent hub: its greenlets, timers and sockets, and calls handed to it from other threads.

    Made in the hub's own thread (:func:`current_loop`, :func:`io_loop`).
    ``listener_pool`` is set on the I/O loop alone: its sessions' listeners
    run in those threads, never in the loop.
    """

    def __init__(
        self, *, listener_pool: ListenerPool | None = None, registry: Registry | None = None
    ) -> None:
        import gevent
        import gevent.event

        from takeover._io.parker import Parker

        hub = gevent.get_hub()
        self._get_ident = _real_get_ident()
        #: The OS thread the hub runs in.
        self.ident = self._get_ident()
        self._calls = CallQueue(hub)
        self._spawn_raw = gevent.spawn_raw
        self._event_class = gevent.event.Event
        self._ev = hub.loop
        #: Parks this hub's idle readers (see :class:`~takeover._io.parker.Parker`).
        self.parker: Parker = Parker(hub.loop)
        #: Where the listeners of this loop's sessions run: None (here) or a pool of threads.
        self.listener_pool = listener_pool
        #: The WebSockets that no server registered elsewhere (the I/O loop's: closed at exit).
        self.registry = registry

    @property
    def in_loop(self) -> bool:
        """Whether the calling thread is the loop's."""
        return self._get_ident() == self.ident

    # -- from any thread -----------------------------------------------------

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` in a greenlet of the loop, from any thread (not waited for)."""
        self._calls.post(fn, *args)

    def call(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` in the loop: now when called from it, else as soon as it can."""
        if self._get_ident() == self.ident:
            fn(*args)
        else:
            self._calls.post(fn, *args)

    def run_sync(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """Run ``fn(*args)`` in the loop and return its result (at once when called from the loop)."""
        if self._get_ident() == self.ident:
            return fn(*args)
        return wait_for_call(self._calls.post, fn, *args, timeout=timeout)

    # -- in the loop ---------------------------------------------------------

    def spawn(self, fn: Callable[..., object], *args: Any) -> None:
        """Start ``fn(*args)`` in a raw greenlet (no links, no result: it catches its own errors)."""
        self._spawn_raw(fn, *args)

    def event(self) -> Any:
        """A ``gevent.event.Event`` of this hub."""
        return self._event_class()

    def call_later(self, delay: float, fn: Callable[[], object]) -> TimerHandle:
        """Call ``fn()`` in a new greenlet after ``delay`` seconds."""
        # A bare loop timer costs far less than a sleeping greenlet per connection; its
        # callback runs in the hub, which must never block, so it only spawns the greenlet.
        timer = self._ev.timer(delay)
        timer.start(self._spawn_raw, fn)
        return _Timer(timer)

    def repeat(self, interval: float, fn: Callable[[], object]) -> Any:
        """A timer calling ``fn()`` in the hub every ``interval`` seconds (it must not block);
        ``pause()`` and ``resume()`` it. It does not keep the loop alive."""
        timer = self._ev.timer(interval, interval, ref=False)
        return _Repeating(timer, fn)

    def run_callback(self, fn: Callable[..., object], *args: Any) -> None:
        """Call ``fn(*args)`` in the hub at the end of this turn of the loop (it must not block)."""
        self._ev.run_callback(fn, *args)

    def transport(self, sock: Any) -> GeventTransport:
        """``sock`` (a gevent socket of this hub) as a transport."""
        from takeover._io.transport import GeventTransport

        return GeventTransport(sock, self)


class _Timer:
    __slots__ = ("_timer",)

    def __init__(self, timer: Any) -> None:
        self._timer = timer

    def cancel(self) -> None:
        self._timer.stop()
        self._timer.close()


class _Repeating:
    __slots__ = ("_fn", "_running", "_timer")

    def __init__(self, timer: Any, fn: Callable[[], object]) -> None:
        self._timer, self._fn, self._running = timer, fn, False
        self.resume()

    def resume(self) -> None:
        if not self._running:
            self._running = True
            self._timer.start(self._fn)

    def pause(self) -> None:
        if self._running:
            self._running = False
            self._timer.stop()


# -- the loops of gevent hubs -------------------------------------------------------



def current_loop() -> Loop:
    """The loop of the calling thread's gevent hub (made on first use)."""
    hub = gevent.get_hub()
    loop: Loop | None = getattr(hub, "_takeover_loop", None)  # the hub holds its loop: they end together
    if loop is None:
        loop = hub._takeover_loop = Loop()
    return loop


def inside_gevent() -> bool:
    """Whether the caller runs under gevent: a monkey-patched process, or a greenlet of a running hub."""
    if monkey.is_module_patched("socket"):
        return True
    return greenlet.getcurrent().parent is not None  # a greenlet the hub runs, not a thread's main one


def loop_of(ws: WebSocket) -> Loop:
    """The loop ``ws`` lives in (where a hub that it joins first lives too)."""
    return ws.session.loop


def loop_for_caller(sock: Any = None) -> Loop:
    """Where a WebSocket upgraded (or a hub first used) by the calling thread lives.

    The one decision of the execution model, from facts about the server:
    under gevent (the caller is a greenlet of a running hub, the process is
    monkey-patched, or the socket it hands over is a gevent socket), the
    caller's own hub; in a plain thread of a threaded or process server, the
    I/O loop.
    """
    if (sock is not None and is_gevent_socket(sock)) or inside_gevent():
        return current_loop()
    return io_loop()


# -- the I/O loop thread -------------------------------------------------------------


class _IOThread:
    """The process's I/O loop: a gevent hub in a daemon thread, started on first use."""

    def __init__(self, name: str = "takeover-io") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stop: Any = None  # a gevent Event of the loop's hub
        self.loop: Loop | None = None

    def start(self) -> Loop:
        """The loop, started (once per process: a forked child starts its own)."""
        loop = self.loop
        if loop is not None and self._pid == os.getpid():
            return loop
        with self._lock:
            if self._thread is None or self._pid != os.getpid():
                self._ready.clear()
                self.loop = None
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        if not self._ready.wait(10):  # every caller: another thread may be starting it
            raise RuntimeError("takeover's I/O loop thread did not start")
        assert self.loop is not None
        return self.loop

    def _run(self) -> None:
        import gevent.event

        from takeover._io.listeners import ListenerPool

        self._stop = gevent.event.Event()
        loop = Loop(listener_pool=ListenerPool(), registry=Registry())
        gevent.get_hub()._takeover_loop = loop  # current_loop() in this thread is this one
        self.loop = loop
        self._ready.set()
        try:
            self._stop.wait()
        finally:
            loop._calls.stop()

    def stop(self, timeout: float = EXIT_TIMEOUT) -> None:
        """Close the loop's WebSockets with 1001 (waiting up to ``timeout``), then end the thread."""
        loop, thread = self.loop, self._thread
        if loop is None or thread is None or self._pid != os.getpid() or not thread.is_alive():
            return
        from takeover.protocol.frames import SHUTDOWN_REASON, CloseCode

        assert loop.registry is not None
        try:
            loop.run_sync(
                loop.registry.close_all, CloseCode.GOING_AWAY, SHUTDOWN_REASON, timeout, timeout=timeout + 1.0
            )
        except (concurrent.futures.TimeoutError, RuntimeError):
            logger.warning("takeover's I/O loop: WebSockets still open after %s s at exit", timeout)
        loop.call_soon_threadsafe(self._stop.set)
        thread.join(timeout=1.0)
        self._thread = None
        self.loop = None


_io_thread = _IOThread()
atexit.register(_io_thread.stop)


def io_loop() -> Loop:
    """The process's I/O loop (see the module's docstring), started on first use."""
    return _io_thread.start()


def stop_io_loop(timeout: float = EXIT_TIMEOUT) -> None:
    """Close the I/O loop's WebSockets with 1001 and end its thread (a server's exit hook)."""
    _io_thread.stop(timeout)


def io_loop_state() -> dict[str, int] | None:
    """The I/O loop's listener pool, for the status page: None where the process has not started it."""
    loop = _io_thread.loop
    if loop is None or _io_thread._pid != os.getpid() or loop.listener_pool is None:
        return None
    return loop.listener_pool.state()
