"""What this process's WebSockets did, counted in plain fields: the figures behind ``takeover.metrics``.

The hot path pays for nothing but an integer addition: each
:class:`~takeover._io.session.Session` counts its own messages and bytes in
fields of its own (``messages_in`` in its loop, ``messages_out`` and
``bytes_out`` under the transport's lock it already holds to write), with no
lock and no call per message. Events that happen once a connection (open,
close, a refused handshake, a 1008 for a client that stopped reading, a
hand-over) are counted here under one lock. :meth:`Stats.snapshot` sums the
open sessions' fields with what the closed ones left, when someone asks
(a Prometheus scrape, the status page): the custom-collector pattern of
``prometheus_client`` ("Custom Collectors"), done without the library so that
the core does not need it.

Bytes are counted on the wire: frame headers included, after compression.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from takeover._io.session import Session

__all__ = ["LAG_BUCKETS", "RECENT_MINUTES", "STATS", "HubStats", "Stats", "redact_url"]

#: The upper bounds (seconds) of the hub's delivery-lag histogram: publish → write to the member.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: How many minutes of closes by code the status page is given.
RECENT_MINUTES = 15


class HubStats:
    """One hub's figures in this process, counted in its home loop (one thread: no lock)."""

    __slots__ = ("deliveries", "gaps", "lag_buckets", "lag_count", "lag_sum", "source")

    def __init__(self, source: Any) -> None:
        #: The hub's per-process state: asked for ``healthy`` and its rooms when a snapshot is made.
        self.source = source
        #: Messages written to members (one per member per message).
        self.deliveries = 0
        #: Gaps reported here (each a run of messages that cannot be recovered).
        self.gaps = 0
        self.lag_buckets = [0] * (len(LAG_BUCKETS) + 1)  # the last: above every bound
        self.lag_sum = 0.0
        self.lag_count = 0

    def delivered(self, members: int, published_at: float | None) -> None:
        """``members`` got one message; its publish time (``time.time()``), when known, gives the lag."""
        self.deliveries += members
        if published_at is None:
            return
        lag = max(time.time() - published_at, 0.0)
        buckets = self.lag_buckets
        for index, bound in enumerate(LAG_BUCKETS):
            if lag <= bound:
                buckets[index] += 1
                break
        else:
            buckets[-1] += 1
        self.lag_sum += lag
        self.lag_count += 1


class Stats:
    """The process's figures (see the module's docstring); one instance, :data:`STATS`."""

    def __init__(self) -> None:
        # gevent's lock where threading is patched: an OS lock held by a greenlet that a
        # finalizer run by the garbage collector switched away from would block the hub.
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.started = time.time()
        self._live: set[Session] = set()
        # Counted with next(): one C call, atomic under the GIL, no lock (read with _value()).
        self._connections = itertools.count()
        self._handovers = itertools.count()
        #: A server handed a connection over (a C call per hand-over: no Python frame, no lock).
        self.handed_over: Callable[[], int] = self._handovers.__next__
        self.closes: dict[int, int] = {}
        self.rejections: dict[int, int] = {}
        self.backpressure_closes = 0
        # What the closed sessions had counted.
        self._messages_in = self._messages_out = self._bytes_in = self._bytes_out = 0
        #: (minute since the epoch, {code: closes}) for the last :data:`RECENT_MINUTES` minutes.
        self.recent_closes: deque[tuple[int, dict[int, int]]] = deque(maxlen=RECENT_MINUTES)
        self.hubs: list[HubStats] = []

    #: Called (without the lock) at each open, refused upgrade and hand-over: takeover.metrics
    #: starts its exporter there in a worker forked without Python's fork hooks (uWSGI's C fork()).
    on_event: Callable[[], object] | None = None

    def _here(self) -> None:
        """A forked child starts from zero: the parent's sessions are not its own.

        ``os.fork()`` resets it at once (a fork hook); a child forked in C (uWSGI's
        workers) is noticed here, at its first event, before anything is counted.
        """
        if os.getpid() != self._pid:
            self._forked()

    def _forked(self) -> None:
        self.__init__()  # type: ignore[misc]

    # -- once a connection (from any thread) ---------------------------------

    def opened(self, session: Session) -> None:
        """``session`` wrote its 101 and is open (no lock: ``set.add`` and ``next`` are atomic)."""
        if self.on_event is not None:
            self.on_event()
        if os.getpid() != self._pid:
            self._forked()  # a worker's first event (a C fork: uWSGI)
        self._live.add(session)
        next(self._connections)

    def closed(self, session: Session, code: int) -> None:
        """``session`` is CLOSED with ``code`` (1006 for a connection lost): its counts are kept."""
        minute = int(time.time() // 60)
        with self._lock:
            if session not in self._live:
                return
            self._live.discard(session)
            self.closes[code] = self.closes.get(code, 0) + 1
            recent = self.recent_closes
            if not recent or recent[-1][0] != minute:
                recent.append((minute, {}))
            counts = recent[-1][1]
            counts[code] = counts.get(code, 0) + 1
            self._messages_in += session.messages_in
            self._messages_out += session.messages_out
            self._bytes_in += session.bytes_in
            self._bytes_out += session.bytes_out

    def rejected(self, status: int) -> None:
        """A handshake was refused with HTTP ``status``."""
        if self.on_event is not None:  # may switch greenlets (it may start a thread): not under the lock
            self.on_event()
        with self._lock:
            self._here()
            self.rejections[status] = self.rejections.get(status, 0) + 1

    def backpressure_closed(self) -> None:
        """A session is closing with 1008: its peer stopped reading (``max_buffered_amount``)."""
        with self._lock:
            self.backpressure_closes += 1

    def add_hub(self, source: Any) -> HubStats:
        """The figures of a hub starting in this process (``source`` has ``healthy`` and ``locals``)."""
        hub = HubStats(source)
        with self._lock:
            self._here()
            self.hubs.append(hub)
        return hub

    def remove_hub(self, hub: HubStats) -> None:
        """A hub closed: its figures leave the snapshot."""
        with self._lock:
            if hub in self.hubs:
                self.hubs.remove(hub)

    # -- when asked ----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Every figure of this process, as plain JSON-ready values (see :mod:`takeover.metrics`)."""
        from takeover._io.handlers import HANDLER_THREADS
        from takeover._io.loop import io_loop_state

        now = time.time()
        with self._lock:
            self._here()
            live = list(self._live)
            figures: dict[str, Any] = {
                "pid": self._pid,
                "started": self.started,
                "time": now,
                "connections_open": len(live),
                "connections_total": _value(self._connections),
                "closes": {str(code): count for code, count in sorted(self.closes.items())},
                "rejections": {str(status): count for status, count in sorted(self.rejections.items())},
                "backpressure_closes": self.backpressure_closes,
                "handovers": _value(self._handovers),
                "recent_closes": [
                    [minute, {str(code): count for code, count in counts.items()}]
                    for minute, counts in self.recent_closes
                    if minute > now // 60 - RECENT_MINUTES  # minutes without closes have no entry
                ],
            }
            messages_in, messages_out = self._messages_in, self._messages_out
            bytes_in, bytes_out = self._bytes_in, self._bytes_out
            hubs = list(self.hubs)
        for session in live:  # fields written by other threads: read, never written, here
            messages_in += session.messages_in
            messages_out += session.messages_out
            bytes_in += session.bytes_in
            bytes_out += session.bytes_out
        figures.update(
            messages_in=messages_in, messages_out=messages_out, bytes_in=bytes_in, bytes_out=bytes_out,
            handler_threads={"running": HANDLER_THREADS.running, "cap": HANDLER_THREADS.cap},
            listener_pool=io_loop_state(),
            hubs=[_hub_figures(hub) for hub in hubs],
        )
        return figures


def _value(counter: itertools.count[int]) -> int:
    """How many times ``next(counter)`` was called: its repr is ``count(N)``, the only way it says."""
    return int(repr(counter)[6:-1])


def _hub_figures(hub: HubStats) -> dict[str, Any]:
    source = hub.source
    try:
        healthy = bool(source.broker.healthy)
    except Exception:  # a broker that cannot say is not healthy
        healthy = False
    rooms = {}
    for name, local in list(source.locals.rooms.items()):  # copied in C: safe from another thread
        rooms[name] = len(local.members)
    return {
        "url": redact_url(getattr(source, "url", "")),
        "healthy": healthy,
        "deliveries": hub.deliveries,
        "gaps": hub.gaps,
        "lag": {"buckets": list(hub.lag_buckets), "bounds": list(LAG_BUCKETS), "sum": hub.lag_sum,
                "count": hub.lag_count},
        "rooms": rooms,
    }


_PASSWORD = re.compile(r"(//[^/@\s]*?:)[^@\s/]*@")
_PASSWORD_PARAMETER = re.compile(r"([?&]password=)[^&\s,]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` (a hub's: one URL or several, comma-separated) without its passwords: what a
    snapshot carries (it goes to files in multiprocess mode, and to the status page)."""
    return _PASSWORD_PARAMETER.sub(r"\1***", _PASSWORD.sub(r"\1***@", url))


#: This process's figures.
STATS = Stats()
os.register_at_fork(after_in_child=STATS._forked)
