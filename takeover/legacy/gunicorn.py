"""``LegacyWorker``: gunicorn's gevent pywsgi worker serving gevent-websocket apps on takeover::

    gunicorn -k takeover.gunicorn.LegacyWorker -w 4 module:app

It replaces ``geventwebsocket.gunicorn.workers.GeventWebSocketWorker``, with
:class:`takeover.legacy.WebSocketHandler` as the handler, so applications find
``environ["wsgi.websocket"]``.
"""

from __future__ import annotations

from typing import Any

import gevent
from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler

from takeover._io.registry import REGISTRY_KEY, Registry
from takeover.gunicorn import RegistryMixin
from takeover.legacy import WebSocketHandler

__all__ = ["LegacyHandler", "LegacyWorker"]


class LegacyHandler(WebSocketHandler, PyWSGIHandler):  # type: ignore[misc]
    """takeover's gevent-websocket handler with gunicorn's access log and environ."""

    #: The worker's registry (set on a subclass made for each worker).
    registry: Registry | None = None

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        if self.registry is not None:
            # The handler upgrades before the application (and its wrapper) runs.
            environ[REGISTRY_KEY] = self.registry
        return environ


class LegacyWorker(RegistryMixin, GeventPyWSGIWorker):  # type: ignore[misc]
    """``GeventWebSocketWorker``'s replacement: gevent-websocket apps on takeover's engine.

    On SIGTERM the WebSockets are closed with 1001 at once; their
    applications see ``receive()`` return ``None`` (or ``send()`` raise
    ``WebSocketError``) and return, so gunicorn's wait for requests in
    progress ends with them (within ``--graceful-timeout``).
    """

    wsgi_handler = LegacyHandler

    def load_wsgi(self) -> None:
        """Load the application; this worker's handlers register their WebSockets with it."""
        super().load_wsgi()
        handler: type[LegacyHandler] = type("LegacyHandler", (LegacyHandler,), {"registry": self.registry})
        self.wsgi_handler = handler

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        # Not in the signal handler itself: closing waits for the close handshakes.
        gevent.spawn(self.close_websockets)

    def run(self) -> None:
        """Serve until told to stop, then close whatever WebSocket is still open."""
        super().run()
        self.close_websockets()
