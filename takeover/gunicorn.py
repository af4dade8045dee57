"""gunicorn workers for takeover::

    gunicorn -k takeover.gunicorn.Worker -w 4 module:app          # takeover apps
    gunicorn -k takeover.gunicorn.LegacyWorker -w 4 module:app    # gevent-websocket apps

In-app upgrades (``upgrade_websocket(request)`` returning its response) work
on gunicorn's stock ``-k gevent`` worker as well: the response hands the
connection to the WebSocket and tells gunicorn it was already handled. What
:class:`Worker` adds is a graceful shutdown for those sessions: gunicorn's own
waits only for HTTP requests in progress, so on SIGTERM this worker also
closes every open WebSocket with 1001 and waits up to ``--graceful-timeout``
for their close handshakes. It keeps them in a
:class:`~takeover._io.registry.Registry` of its own, which it puts in each
request's environ.

``LegacyWorker`` lives in :mod:`takeover.legacy.gunicorn` (it needs
gevent-websocket); the name here stays for command lines written with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from gunicorn.workers.ggevent import GeventWorker

from takeover._io.registry import REGISTRY_KEY, Registry
from takeover.protocol.frames import SHUTDOWN_REASON, CloseCode

__all__ = ["RegistryMixin", "Worker"]  # and LegacyWorker, imported on first use


class RegistryMixin:
    """A gunicorn worker that registers its WebSockets and closes them with 1001 when it stops."""

    registry: Registry
    wsgi: Callable[..., Iterable[bytes]]
    cfg: Any

    def load_wsgi(self) -> None:
        """Load the application, wrapped to put this worker's registry in each environ."""
        super().load_wsgi()  # type: ignore[misc]
        registry = self.registry = Registry()
        app = self.wsgi

        def with_registry(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            environ[REGISTRY_KEY] = registry
            return app(environ, start_response)

        self.wsgi = with_registry

    def close_websockets(self) -> None:
        """Close this worker's open WebSockets with 1001, waiting up to ``--graceful-timeout``."""
        self.registry.close_all(CloseCode.GOING_AWAY, SHUTDOWN_REASON, self.cfg.graceful_timeout)


class Worker(RegistryMixin, GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker that closes open WebSockets with 1001 when it stops."""

    def run(self) -> None:
        """Serve until told to stop, then close the WebSockets of this worker."""
        super().run()
        self.close_websockets()


def __getattr__(name: str) -> Any:
    # Imported on first use: only takeover.legacy imports gevent-websocket.
    if name == "LegacyWorker":
        from takeover.legacy.gunicorn import LegacyWorker

        return LegacyWorker
    raise AttributeError(f"module 'takeover.gunicorn' has no attribute {name!r}")
