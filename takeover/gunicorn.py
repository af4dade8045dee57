"""``takeover.gunicorn.Worker``: gunicorn's gevent worker, ready for takeovers::

    gunicorn -k takeover.gunicorn.Worker -w 4 module:app

In-app upgrades (``upgrade_websocket(request)`` returning its response) work
on gunicorn's stock ``-k gevent`` worker as well: the response hands the
connection to the WebSocket and tells gunicorn it was already handled. What
this worker adds is a graceful shutdown for those sessions: gunicorn's own
waits only for HTTP requests in progress, so on SIGTERM this worker also
closes every open WebSocket with 1001 and waits up to ``--graceful-timeout``
for their close handshakes.
"""

from __future__ import annotations

from gunicorn.workers.ggevent import GeventWorker

from takeover.protocol.frames import CloseCode
from takeover.websocket import close_all, open_websockets

__all__ = ["Worker"]

SHUTDOWN_REASON = "Server shutting down"


class Worker(GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker that closes open WebSockets with 1001 when it stops."""

    def run(self) -> None:
        """Serve until told to stop, then close the WebSockets of this worker."""
        super().run()
        close_all(open_websockets(), CloseCode.GOING_AWAY, SHUTDOWN_REASON, self.cfg.graceful_timeout)
