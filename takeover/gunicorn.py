"""gunicorn workers for takeover::

    gunicorn -k takeover.gunicorn.Worker -w 4 module:app          # takeover apps
    gunicorn -k takeover.gunicorn.LegacyWorker -w 4 module:app    # gevent-websocket apps

In-app upgrades (``upgrade_websocket(request)`` returning its response) work
on gunicorn's stock ``-k gevent`` worker as well: the response hands the
connection to the WebSocket and tells gunicorn it was already handled. What
:class:`Worker` adds is a graceful shutdown for those sessions: gunicorn's own
waits only for HTTP requests in progress, so on SIGTERM this worker also
closes every open WebSocket with 1001 and waits up to ``--graceful-timeout``
for their close handshakes.

:class:`LegacyWorker` replaces ``geventwebsocket.gunicorn.workers.GeventWebSocketWorker``:
gunicorn's gevent pywsgi worker with :class:`takeover.legacy.WebSocketHandler`, so
applications written for gevent-websocket find ``environ["wsgi.websocket"]``.
It closes open WebSockets with 1001 as soon as it is told to stop.
"""

from __future__ import annotations

from typing import Any

import gevent
from gunicorn.workers.ggevent import GeventPyWSGIWorker, GeventWorker, PyWSGIHandler

from takeover.legacy import WebSocketHandler
from takeover.protocol.frames import SHUTDOWN_REASON, CloseCode
from takeover.websocket import close_all, open_websockets

__all__ = ["LegacyWorker", "Worker"]


class Worker(GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker that closes open WebSockets with 1001 when it stops."""

    def run(self) -> None:
        """Serve until told to stop, then close the WebSockets of this worker."""
        super().run()
        close_all(open_websockets(), CloseCode.GOING_AWAY, SHUTDOWN_REASON, self.cfg.graceful_timeout)


class LegacyHandler(WebSocketHandler, PyWSGIHandler):  # type: ignore[misc]
    """takeover's gevent-websocket handler with gunicorn's access log and environ."""


class LegacyWorker(GeventPyWSGIWorker):  # type: ignore[misc]
    """``GeventWebSocketWorker``'s replacement: gevent-websocket apps on takeover's engine.

    On SIGTERM the WebSockets are closed with 1001 at once; their
    applications see ``receive()`` return ``None`` and return, so gunicorn's
    wait for requests in progress ends with them (within ``--graceful-timeout``).
    """

    wsgi_handler = LegacyHandler

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        # Not in the signal handler itself: closing waits for the close handshakes.
        gevent.spawn(self._close_websockets)

    def _close_websockets(self) -> None:
        close_all(open_websockets(), CloseCode.GOING_AWAY, SHUTDOWN_REASON, self.cfg.graceful_timeout)

    def run(self) -> None:
        """Serve until told to stop, then close whatever WebSocket is still open."""
        super().run()
        self._close_websockets()
