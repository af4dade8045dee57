"""``IOLoop``: a gevent hub in a thread of its own, where handed-over connections live.

Servers that run each request in a thread or a process (gunicorn's sync and
gthread workers, uWSGI with threads, Werkzeug's threaded server) must get
their thread back as soon as the view returns. An event-style WebSocket's
connection is then *handed over*: its socket is duplicated and given to this
loop, which reads and writes it on gevent sockets, while its listeners run in
a :class:`~takeover._io.listeners.ListenerPool`. The process needs no
monkey-patching: the hub belongs to the loop's thread alone.

There is one loop per process (:func:`io_loop`), started on first use and
stopped at exit after its WebSockets are closed with 1001.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from takeover._io.calls import CallQueue, wait_for_call
from takeover._io.registry import Registry

__all__ = ["IOLoop", "io_loop"]

logger = logging.getLogger("takeover")
T = TypeVar("T")

#: Seconds the exit hook waits for handed-over WebSockets' close handshakes.
EXIT_TIMEOUT = 5.0


class IOLoop:
    """A gevent hub running in a daemon thread; other threads hand it calls."""

    def __init__(self, name: str = "takeover-io") -> None:
        self.name = name
        #: The WebSockets handed over to this loop, until they close.
        self.registry = Registry()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._calls: CallQueue | None = None
        self._stop: Any = None  # a gevent Event of the loop's hub
        self._pid = 0
        #: The loop thread's identifier, once started.
        self.ident: int | None = None

    @property
    def in_loop(self) -> bool:
        """Whether the calling thread is the loop's."""
        return threading.get_ident() == self.ident

    def start(self) -> None:
        """Start the thread (once per process; a forked child starts its own)."""
        with self._lock:
            if self._thread is None or self._pid != os.getpid():
                self._ready.clear()
                self._calls = None
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        if not self._ready.wait(10):  # every caller: another thread may be starting it
            raise RuntimeError("takeover's I/O loop thread did not start")

    def _run(self) -> None:
        import gevent
        import gevent.event

        calls = self._calls = CallQueue(gevent.get_hub())
        self.ident = threading.get_ident()
        self._stop = gevent.event.Event()
        self._ready.set()
        try:
            self._stop.wait()
        finally:
            calls.stop()

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` in a greenlet of the loop, from any thread."""
        if not self._ready.is_set() or self._pid != os.getpid():
            self.start()
        assert self._calls is not None
        self._calls.post(fn, *args)

    def run_sync(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """Run ``fn(*args)`` in the loop and wait for its result (from a thread that is not the loop's)."""
        if self.in_loop:
            return fn(*args)
        return wait_for_call(self.call_soon_threadsafe, fn, *args, timeout=timeout)

    def stop(self, timeout: float = EXIT_TIMEOUT) -> None:
        """Close the loop's WebSockets with 1001 (waiting up to ``timeout``), then end the thread."""
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            return
        from takeover.protocol.frames import SHUTDOWN_REASON, CloseCode

        try:
            self.run_sync(
                self.registry.close_all, CloseCode.GOING_AWAY, SHUTDOWN_REASON, timeout,
                timeout=timeout + 1.0,
            )
        except (concurrent.futures.TimeoutError, RuntimeError):
            logger.warning("takeover's I/O loop: WebSockets still open after %s s at exit", timeout)
        self.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=1.0)
        self._thread = None


_loop = IOLoop()
atexit.register(_loop.stop)


def io_loop() -> IOLoop:
    """The process's I/O loop, started on first use."""
    _loop.start()
    return _loop
