"""The status page's figures: each process's snapshot (takeover._io.stats) made into rows and totals.

Small pure functions, apart from :class:`Rates`, which keeps each process's
last snapshot to measure rates between two. :func:`status` makes the page's
JSON, described in :mod:`takeover.metrics.status`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from takeover._io.stats import RECENT_MINUTES, redact_url

__all__ = [
    "RATE_WINDOW",
    "TOP_ROOMS",
    "Rates",
    "close_totals",
    "hub_rows",
    "lag_quantile",
    "lag_summary",
    "per_second",
    "process_row",
    "recent_closes",
    "redact_url",
    "room_members",
    "status",
    "total_row",
]

Snapshot = dict[str, Any]
Row = dict[str, Any]

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
