"""The live status page: :class:`StatusApp`, served as ``takeover.metrics.status_app``.

One WSGI app answers three kinds of request, whatever the path it is mounted at:

* a WebSocket upgrade: the page's feed. The figures as JSON at once, then
  every ``interval`` seconds until the page goes away, written by a blocking
  handler (``upgrade_websocket(handler=...)``) that runs in takeover's own
  thread (a greenlet under gevent), never in the server's request thread;
* ``GET ...?format=json``: the same JSON, once;
* any other ``GET`` (or ``HEAD``): the HTML page (takeover.metrics._page),
  which opens a WebSocket to its own URL and redraws itself on each message.

The JSON::

    {"time": 1700000000.0,          # when it was made (seconds since the epoch)
     "interval": 1.0,               # seconds between two updates of the feed
     "processes": [ROW, ...],       # one per live process (worker), by pid
     "total": ROW,                  # the rows summed ("pid": how many processes)
     "rooms": {"lobby": 12, ...},   # the 50 rooms with the most members, summed over processes
     "room_count": 130, "members": 410,
     "hubs": [{"url", "healthy", "processes", "rooms", "members", "deliveries", "gaps", "lag"}]}

and a ROW has ``pid``, ``started``, ``uptime``, ``updated`` (when its figures
were taken), ``connections_open``, ``connections_total``,
``messages_in_per_second``, ``messages_out_per_second``,
``bytes_in_per_second``, ``bytes_out_per_second`` (rates are measured here,
between two snapshots of the process at least half a second (``RATE_WINDOW``)
apart, and are 0 the first time a process is seen), ``closes_recent`` (``{code:
closes}`` over the last 15 minutes), ``closes_by_minute`` (``[[minute since the
epoch, {code: closes}], ...]``, each of those minutes, oldest first),
``rejections``, ``backpressure_closes``, ``handovers``, ``handler_threads``
(``{"running", "cap"}``), ``listener_pool`` (None, or ``{"threads", "busy",
"queued", "max_threads"}``), ``hub_healthy`` (None without a hub, else whether
every hub reaches its broker) and ``hub_lag`` (``{"count", "sum", "mean",
"p99", "buckets", "bounds"}``: publish → write to the members, in seconds;
``p99`` interpolated in the histogram's buckets, as Prometheus's
``histogram_quantile`` does).

The page's own WebSocket is an open socket like any other: it counts in
``connections_open`` (and its handler in ``handler_threads``).

Access: ``authorize(environ)`` returning False answers 403 to everything,
upgrades included; the WebSocket also only accepts a browser page of the same
host (its ``Origin`` against the ``Host`` header), so that another site's page
cannot read the figures with the operator's cookies. Behind a proxy that
rewrites ``Host``, give the app the public one (werkzeug's ``ProxyFix`` with
``x_host=1``). See docs/guides/operations.rst, "A live status page".
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from takeover.errors import ConnectionClosed
from takeover.metrics._page import PAGE, SCRIPT, STYLE
from takeover.metrics._status_figures import Rates, status
from takeover.protocol.handshake import is_upgrade_request
from takeover.protocol.origin import normalize_origin
from takeover.protocol.state import State

if TYPE_CHECKING:
    from takeover.websocket import WebSocket

__all__ = ["StatusApp", "same_host"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


def same_host(origin: str | None, host: str | None) -> bool:
    """Whether a browser page of ``origin`` is on ``host`` (a ``Host`` header), over http or https.

    None (a client that is not a browser: they always send ``Origin``) is allowed.
    """
    if origin is None:
        return True
    if not host:
        return False
    try:
        theirs = normalize_origin(origin)
        ours = {normalize_origin(f"{scheme}://{host}") for scheme in ("http", "https")}
    except ValueError:
        return False
    return theirs in ours


# -- the WSGI app ----------------------------------------------------------------


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


#: Only the page's own style and script run; it connects only to its own host.
_POLICY = (
    f"default-src 'none'; style-src {_digest(STYLE)}; script-src {_digest(SCRIPT)}; img-src data:; "
    "base-uri 'none'; form-action 'none'; connect-src 'self'"
)
_HOST = re.compile(r"[A-Za-z0-9.\-:\[\]]+")
_COMMON = [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
           ("Referrer-Policy", "no-referrer")]
_PAGE = PAGE.encode()


class StatusApp:
    """The live status page, a WSGI app (see the module's docstring); mount it anywhere.

    ``authorize(environ)``, when given, is asked about every request: False
    answers 403 (put the page behind your own auth). ``interval`` is the
    number of seconds between two updates of an open page.
    """

    def __init__(
        self, authorize: Callable[[dict[str, Any]], bool] | None = None, interval: float = 1.0
    ) -> None:
        if authorize is not None and not callable(authorize):
            raise TypeError(f"authorize must be a function of the WSGI environ, not {authorize!r}")
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not (
            math.isfinite(interval) and interval > 0
        ):
            raise ValueError(f"interval must be a number of seconds > 0, not {interval!r}")
        self.authorize = authorize
        self.interval = float(interval)
        self._rates = Rates()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Answer one request: 403, the feed (an upgrade), the JSON, or the page."""
        if self.authorize is not None and not self.authorize(environ):
            return _answer(start_response, "403 Forbidden", "text/plain; charset=utf-8", b"Forbidden\n")
        if is_upgrade_request(environ.get("HTTP_UPGRADE"), environ.get("HTTP_CONNECTION"), "websocket"):
            return self._upgrade(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _answer(start_response, "405 Method Not Allowed", "text/plain; charset=utf-8",
                           b"Method Not Allowed\n", [("Allow", "GET, HEAD")])
        if parse_qs(environ.get("QUERY_STRING", "")).get("format") == ["json"]:
            body = self.json().encode()
            return _answer(start_response, "200 OK", "application/json", body, head=method == "HEAD")
        host = environ.get("HTTP_HOST", "")
        policy = _POLICY
        if _HOST.fullmatch(host):  # 'self' covers ws: and wss: in CSP 3; older browsers need them named
            policy += f" ws://{host} wss://{host}"
        return _answer(start_response, "200 OK", "text/html; charset=utf-8", _PAGE,
                       [("Content-Security-Policy", policy)], head=method == "HEAD")

    def figures(self) -> dict[str, Any]:
        """The JSON's content, now: every live process's figures (``takeover.metrics.figures()``)."""
        from takeover.metrics import figures

        made = status(figures(), self._rates, time.time())
        made["interval"] = self.interval
        return made

    def json(self) -> str:
        """The JSON as text, now."""
        return json.dumps(self.figures(), separators=(",", ":"))

    def _upgrade(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        from werkzeug.exceptions import HTTPException

        from takeover.upgrade import upgrade_websocket

        host = environ.get("HTTP_HOST")
        try:
            _, response = upgrade_websocket(
                environ, handler=self._feed, allowed_origins=lambda origin: same_host(origin, host)
            )
        except HTTPException as error:  # refused (403 for another site's page; 400, 426, 503...)
            answer: Iterable[bytes] = error(environ, start_response)
            return answer
        answered: Iterable[bytes] = response(environ, start_response)
        return answered

    def _feed(self, ws: WebSocket) -> None:
        """The page's updates: the figures now, then every ``interval`` seconds, while it is open.

        A handler: it runs in a thread of takeover's (a greenlet under gevent),
        and the WebSocket closes with 1000 when it returns. The page sends
        nothing; whatever it sends is read and dropped. A page that has not
        read the last update yet is sent the next one instead (no backlog).
        """
        due = time.monotonic()
        while ws.ready_state is State.OPEN:
            if ws.buffered_amount == 0:
                ws.send(self.json())
            due = max(due + self.interval, time.monotonic())
            try:
                while (left := due - time.monotonic()) > 0:
                    ws.receive(timeout=left)
            except TimeoutError:
                continue
            except ConnectionClosed:
                return


def _answer(
    start_response: StartResponse, status: str, content_type: str, body: bytes,
    headers: Sequence[tuple[str, str]] = (), head: bool = False,
) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))), *_COMMON,
                            *headers])
    return [] if head else [body]
