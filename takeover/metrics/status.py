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
between two snapshots of the process at least :data:`RATE_WINDOW` seconds
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
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from takeover._io.stats import RECENT_MINUTES
from takeover.errors import ConnectionClosed
from takeover.metrics._page import PAGE, SCRIPT, STYLE
from takeover.protocol.handshake import is_upgrade_request
from takeover.protocol.origin import normalize_origin
from takeover.protocol.state import State

if TYPE_CHECKING:
    from takeover.websocket import WebSocket

__all__ = [
    "RATE_WINDOW",
    "TOP_ROOMS",
    "Rates",
    "StatusApp",
    "close_totals",
    "hub_rows",
    "lag_quantile",
    "lag_summary",
    "per_second",
    "process_row",
    "recent_closes",
    "redact_url",
    "room_members",
    "same_host",
    "status",
    "total_row",
]

Snapshot = dict[str, Any]
Row = dict[str, Any]
Environ = dict[str, Any]
StartResponse = Callable[..., Any]

#: How many rooms (those with the most members) the page is sent.
TOP_ROOMS = 50
#: A rate is measured over at least this many seconds (a snapshot asked for sooner gets the last rate).
RATE_WINDOW = 0.5
#: The counters whose rates the rows carry, as ``<counter>_per_second``.
RATE_KEYS = ("messages_in", "messages_out", "bytes_in", "bytes_out")


# -- the figures: small pure functions ----------------------------------------


def per_second(before: Mapping[str, Any] | None, after: Mapping[str, Any], key: str) -> float:
    """How fast the counter ``key`` grew from ``before`` to ``after``, two snapshots of one process.

    0 the first time (``before`` None), for another process under the same pid
    (``started`` differs), when no time passed, and for a counter that went back.
    """
    if before is None or before.get("started") != after.get("started"):
        return 0.0
    elapsed = float(after["time"]) - float(before["time"])
    grown = after[key] - before[key]
    if elapsed <= 0 or grown < 0:
        return 0.0
    return float(grown / elapsed)


def lag_quantile(buckets: Sequence[int], bounds: Sequence[float], quantile: float = 0.99) -> float | None:
    """The ``quantile`` of a histogram, approximately; None when it is empty.

    ``buckets`` are counts per bucket, not cumulative, one more than ``bounds``
    (the last: above every bound). The value is interpolated linearly inside
    the bucket where the quantile falls (from 0 in the first); in the last
    bucket it is the highest bound, all that is known (Prometheus's
    ``histogram_quantile`` does the same).
    """
    total = sum(buckets)
    if total <= 0 or not bounds:
        return None
    rank = quantile * total
    seen = 0
    lower = 0.0
    for index, count in enumerate(buckets):
        if index >= len(bounds):
            break
        upper = float(bounds[index])
        if count > 0 and seen + count >= rank:
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
        lower = upper
    return float(bounds[-1])


def lag_summary(lags: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Lag histograms (a snapshot's ``hub["lag"]``, or summaries of this function) merged and summarised."""
    bounds: list[float] = []
    buckets: list[int] = []
    total = 0.0
    for lag in lags:
        if not lag["buckets"]:
            continue  # a summary of nothing
        if not buckets:
            bounds = [float(bound) for bound in lag["bounds"]]
            buckets = [0] * (len(bounds) + 1)
        if len(lag["buckets"]) != len(buckets):
            continue  # another histogram's shape: not mergeable
        buckets = [mine + theirs for mine, theirs in zip(buckets, lag["buckets"], strict=True)]
        total += float(lag["sum"])
    count = sum(buckets)
    return {
        "count": count,
        "sum": total,
        "mean": total / count if count else None,
        "p99": lag_quantile(buckets, bounds),
        "buckets": buckets,
        "bounds": bounds,
    }


def recent_closes(
    recent: Iterable[Sequence[Any]], now: float, minutes: int = RECENT_MINUTES
) -> list[list[Any]]:
    """Closes by code for each of the last ``minutes`` minutes up to ``now``'s, oldest first.

    ``recent`` is a snapshot's ``recent_closes``: only minutes that had closes,
    possibly older than the window (they are left out here). Codes are strings
    (JSON's object keys).
    """
    current = int(now // 60)
    first = current - minutes + 1
    counts: dict[int, dict[str, int]] = {minute: {} for minute in range(first, current + 1)}
    for minute, by_code in recent:
        slot = counts.get(int(minute))
        if slot is None:
            continue
        for code, closes in by_code.items():
            slot[str(code)] = slot.get(str(code), 0) + int(closes)
    return [[minute, counts[minute]] for minute in range(first, current + 1)]


def close_totals(by_minute: Iterable[Sequence[Any]]) -> dict[str, int]:
    """``{code: closes}`` summed over ``by_minute`` (as :func:`recent_closes` gives), by code."""
    totals: dict[str, int] = {}
    for _, by_code in by_minute:
        for code, closes in by_code.items():
            totals[code] = totals.get(code, 0) + closes
    return {code: totals[code] for code in sorted(totals, key=_code_order)}


def _code_order(code: str) -> tuple[int, str]:
    return (int(code), code) if code.isdigit() else (1 << 30, code)


def _summed(dicts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    summed: dict[str, int] = {}
    for one in dicts:
        for key, value in one.items():
            summed[key] = summed.get(key, 0) + value
    return {key: summed[key] for key in sorted(summed, key=_code_order)}


def process_row(snapshot: Mapping[str, Any], rates: Mapping[str, float], now: float) -> Row:
    """One process's row: its snapshot (takeover._io.stats), its ``rates`` (per counter), at ``now``."""
    by_minute = recent_closes(snapshot["recent_closes"], now)
    hubs = snapshot["hubs"]
    return {
        "pid": snapshot["pid"],
        "started": snapshot["started"],
        "uptime": max(now - float(snapshot["started"]), 0.0),
        "updated": snapshot["time"],
        "connections_open": snapshot["connections_open"],
        "connections_total": snapshot["connections_total"],
        **{f"{key}_per_second": float(rates.get(key, 0.0)) for key in RATE_KEYS},
        "closes_recent": close_totals(by_minute),
        "closes_by_minute": by_minute,
        "rejections": dict(snapshot["rejections"]),
        "backpressure_closes": snapshot["backpressure_closes"],
        "handovers": snapshot["handovers"],
        "handler_threads": dict(snapshot["handler_threads"]),
        "listener_pool": dict(snapshot["listener_pool"]) if snapshot["listener_pool"] is not None else None,
        "hub_healthy": all(hub["healthy"] for hub in hubs) if hubs else None,
        "hub_lag": lag_summary(hub["lag"] for hub in hubs),
    }


def total_row(rows: Sequence[Row]) -> Row:
    """The rows of every process summed; its ``pid`` is how many processes there are."""
    minutes: dict[int, list[Mapping[str, int]]] = {}
    for row in rows:
        for minute, by_code in row["closes_by_minute"]:
            minutes.setdefault(minute, []).append(by_code)
    by_minute = [[minute, _summed(minutes[minute])] for minute in sorted(minutes)]
    caps = [row["handler_threads"]["cap"] for row in rows if row["handler_threads"]["cap"] is not None]
    pools = [row["listener_pool"] for row in rows if row["listener_pool"] is not None]
    health = [row["hub_healthy"] for row in rows if row["hub_healthy"] is not None]
    return {
        "pid": len(rows),
        "connections_open": sum(row["connections_open"] for row in rows),
        "connections_total": sum(row["connections_total"] for row in rows),
        **{f"{key}_per_second": sum(row[f"{key}_per_second"] for row in rows) for key in RATE_KEYS},
        "closes_recent": close_totals(by_minute),
        "closes_by_minute": by_minute,
        "rejections": _summed(row["rejections"] for row in rows),
        "backpressure_closes": sum(row["backpressure_closes"] for row in rows),
        "handovers": sum(row["handovers"] for row in rows),
        "handler_threads": {
            "running": sum(row["handler_threads"]["running"] for row in rows),
            "cap": sum(caps) if caps else None,
        },
        "listener_pool": _summed(pools) if pools else None,
        "hub_healthy": all(health) if health else None,
        "hub_lag": lag_summary(row["hub_lag"] for row in rows),
    }


def room_members(
    snapshots: Iterable[Mapping[str, Any]], limit: int = TOP_ROOMS
) -> tuple[dict[str, int], int, int]:
    """The ``limit`` rooms with the most members (summed over processes and hubs), most first;
    how many rooms have members; how many members they have in all."""
    summed: dict[str, int] = {}
    for snapshot in snapshots:
        for hub in snapshot["hubs"]:
            for room, members in hub["rooms"].items():
                if members > 0:
                    summed[room] = summed.get(room, 0) + members
    top = sorted(summed.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return dict(top), len(summed), sum(summed.values())


_PASSWORD = re.compile(r"(//[^/@\s]*?:)[^@\s/]*@")
_PASSWORD_PARAMETER = re.compile(r"([?&]password=)[^&\s,]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` (a hub's: one URL or several, comma-separated) without its passwords."""
    return _PASSWORD_PARAMETER.sub(r"\1***", _PASSWORD.sub(r"\1***@", url))


def hub_rows(snapshots: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per hub URL, over every process that has that hub (passwords left out of the URL)."""
    hubs: dict[str, list[Mapping[str, Any]]] = {}
    for snapshot in snapshots:
        for hub in snapshot["hubs"]:
            hubs.setdefault(redact_url(str(hub["url"])), []).append(hub)
    rows = []
    for url, found in hubs.items():
        rooms = {room for hub in found for room, members in hub["rooms"].items() if members > 0}
        rows.append({
            "url": url,
            "healthy": all(hub["healthy"] for hub in found),
            "processes": len(found),
            "rooms": len(rooms),
            "members": sum(sum(hub["rooms"].values()) for hub in found),
            "deliveries": sum(hub["deliveries"] for hub in found),
            "gaps": sum(hub["gaps"] for hub in found),
            "lag": lag_summary(hub["lag"] for hub in found),
        })
    return rows


class Rates:
    """Each process's rates, from its snapshots as they come (safe from any thread).

    A process's last snapshot is kept as the start of its next measure; one that
    comes less than ``window`` seconds later (another page, or the same file of
    another worker read again) gets the last rates measured instead of a noisy one.
    """

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._since: dict[int, dict[str, Any]] = {}
        self._rates: dict[int, dict[str, float]] = {}

    def update(self, snapshot: Mapping[str, Any]) -> dict[str, float]:
        """The rates of ``snapshot``'s process (0 the first time it is seen)."""
        pid = int(snapshot["pid"])
        kept = {key: snapshot[key] for key in ("started", "time", *RATE_KEYS)}
        with self._lock:
            since = self._since.get(pid)
            if since is None or since["started"] != kept["started"] or kept["time"] < since["time"]:
                rates = dict.fromkeys(RATE_KEYS, 0.0)
            elif kept["time"] - since["time"] < self.window:
                return dict(self._rates[pid])
            else:
                rates = {key: per_second(since, kept, key) for key in RATE_KEYS}
            self._since[pid] = kept
            self._rates[pid] = rates
            return dict(rates)

    def keep(self, pids: Iterable[int]) -> None:
        """Forget the processes not in ``pids`` (they exited)."""
        alive = set(pids)
        with self._lock:
            for pid in [pid for pid in self._since if pid not in alive]:
                del self._since[pid]
                self._rates.pop(pid, None)


def status(snapshots: Sequence[Mapping[str, Any]], rates: Rates, now: float) -> dict[str, Any]:
    """The page's JSON (see the module's docstring, without ``interval``) from each process's snapshot."""
    rows = sorted((process_row(snapshot, rates.update(snapshot), now) for snapshot in snapshots),
                  key=lambda row: int(row["pid"]))
    rates.keep(row["pid"] for row in rows)
    rooms, room_count, members = room_members(snapshots)
    return {
        "time": now,
        "processes": rows,
        "total": total_row(rows),
        "rooms": rooms,
        "room_count": room_count,
        "members": members,
        "hubs": hub_rows(snapshots),
    }


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
        self._lock = threading.Lock()
        self._made = -math.inf
        self._json = ""

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
        """The JSON as text; made at most once every half ``interval`` for every page and request."""
        with self._lock:
            now = time.monotonic()
            if now - self._made >= self.interval / 2:
                self._json = json.dumps(self.figures(), separators=(",", ":"))
                self._made = now
            return self._json

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
