"""Where a hub lives: one gevent hub (a thread's event loop), and how other threads reach it.

All of a :class:`~takeover.hub.Hub`'s state and all its broker I/O belong to
one gevent hub, its *home*, so none of it needs a lock: greenlets switch only
where they wait on I/O. The home is the loop the hub's WebSockets live in:

* under gevent (``takeover serve``, gunicorn's gevent workers, a script
  running :func:`takeover.create_server`), the hub of the calling thread;
* on threaded servers (gunicorn sync and gthread, uWSGI threads, Werkzeug),
  whose WebSockets are handed over to takeover's I/O loop thread, that loop.

A call from any other thread is run in the home and waited for, as
:meth:`takeover._io.loop.IOLoop.run_sync` does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from takeover.websocket import WebSocket

__all__ = ["GeventHome", "Home", "home_for"]

logger = logging.getLogger("takeover.hub")
T = TypeVar("T")


class Home(Protocol):
    """A gevent hub that other threads can hand calls to (``IOLoop`` is one)."""

    @property
    def in_loop(self) -> bool: ...

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None: ...

    def run_sync(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T: ...


def _real_thread_ident() -> Callable[[], int]:
    # Under monkey-patching threading.get_ident names the greenlet; the hub belongs to the OS thread.
    from gevent import monkey

    get_ident: Callable[[], int] = monkey.get_original("_thread", "get_ident")
    return get_ident


class GeventHome:
    """The gevent hub of the thread that made this object."""

    def __init__(self) -> None:
        import gevent

        from takeover._io.calls import CallQueue

        self._get_ident = _real_thread_ident()
        self.ident = self._get_ident()
        self._calls = CallQueue(gevent.get_hub())

    @property
    def in_loop(self) -> bool:
        return self._get_ident() == self.ident

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` in a greenlet of the home, from any thread."""
        self._calls.post(fn, *args)

    def run_sync(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """Run ``fn(*args)`` in the home and return its result."""
        if self.in_loop:
            return fn(*args)
        from takeover._io.calls import wait_for_call

        return wait_for_call(self.call_soon_threadsafe, fn, *args, timeout=timeout)


def _inside_gevent() -> bool:
    """Whether the caller runs under gevent: a monkey-patched process, or a greenlet of a running hub."""
    import greenlet  # type: ignore[import-untyped]
    from gevent import monkey

    if monkey.is_module_patched("socket"):
        return True
    return greenlet.getcurrent().parent is not None  # a greenlet the hub runs, not a thread's main one


def home_for(ws: WebSocket | None) -> Home:
    """The home for a hub first used by the calling thread (with ``ws``, when joining one)."""
    if ws is not None and ws.session.loop is not None:
        return ws.session.loop  # handed over already: its loop
    if _inside_gevent():
        return GeventHome()
    from takeover._io.loop import io_loop

    return io_loop()  # a thread of a threaded server: its WebSockets are handed over to this loop
