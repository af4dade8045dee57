"""The metrics takeover exports, as one table from a process's figures (takeover._io.stats).

Each row names a metric, its type, its help text, how ``prometheus_client``'s
multiprocess mode combines the processes (gauges only) and how to read its
samples from one snapshot. The single-process collector and the multiprocess
exporter both read this table, so a metric is defined once. The names are
pinned (tests outside this repository scrape them): see docs/guides/operations.rst.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["FAMILIES", "Family", "lag_histogram", "lag_sum", "le_label"]

#: One sample's labels as a tuple of values (in the family's ``labels`` order) -> its value.
Samples = dict[tuple[str, ...], float]


@dataclass(frozen=True)
class Family:
    """One metric: ``name`` without ``_total`` for counters (prometheus_client's convention)."""

    name: str
    kind: str  # "counter" or "gauge"
    help: str
    read: Callable[[dict[str, Any]], Samples]
    labels: tuple[str, ...] = ()
    #: How the processes combine (prometheus_client's multiprocess_mode, gauges only).
    mode: str = "livesum"


def _one(key: str) -> Callable[[dict[str, Any]], Samples]:
    return lambda figures: {(): float(figures[key])}


def _by(key: str) -> Callable[[dict[str, Any]], Samples]:
    return lambda figures: {(label,): float(count) for label, count in figures[key].items()}


def _hub_sum(key: str) -> Callable[[dict[str, Any]], Samples]:
    def read(figures: dict[str, Any]) -> Samples:
        hubs = figures["hubs"]
        return {(): float(sum(hub[key] for hub in hubs))} if hubs else {}

    return read


def _hub_healthy(figures: dict[str, Any]) -> Samples:
    hubs = figures["hubs"]
    return {(): float(all(hub["healthy"] for hub in hubs))} if hubs else {}


def _hub_members(figures: dict[str, Any]) -> Samples:
    hubs = figures["hubs"]
    return {(): float(sum(sum(hub["rooms"].values()) for hub in hubs))} if hubs else {}


def _pool(key: str) -> Callable[[dict[str, Any]], Samples]:
    def read(figures: dict[str, Any]) -> Samples:
        pool = figures["listener_pool"]
        return {(): float(pool[key])} if pool is not None else {}

    return read


def _handlers(figures: dict[str, Any]) -> Samples:
    return {(): float(figures["handler_threads"]["running"])}


FAMILIES: tuple[Family, ...] = (
    Family("takeover_connections_open", "gauge", "Open WebSockets.", _one("connections_open")),
    Family("takeover_connections", "counter", "WebSockets opened (101 written).", _one("connections_total")),
    Family("takeover_closes", "counter", "WebSockets closed, by close code (1006: connection lost).",
           _by("closes"), ("code",)),
    Family("takeover_handshake_rejections", "counter", "Upgrades refused, by HTTP status.",
           _by("rejections"), ("status",)),
    Family("takeover_messages_received", "counter", "Messages received.", _one("messages_in")),
    Family("takeover_messages_sent", "counter", "Messages sent.", _one("messages_out")),
    Family("takeover_bytes_received", "counter", "Bytes received, as on the wire.", _one("bytes_in")),
    Family("takeover_bytes_sent", "counter", "Bytes sent, as on the wire.", _one("bytes_out")),
    Family("takeover_backpressure_closes", "counter",
           "WebSockets closed with 1008 because the client stopped reading (max_buffered_amount).",
           _one("backpressure_closes")),
    Family("takeover_handovers", "counter", "Connections handed over by a server to takeover.",
           _one("handovers")),
    Family("takeover_handler_threads", "gauge", "Blocking handlers running (each a thread).", _handlers),
    Family("takeover_listener_threads", "gauge", "Threads of the I/O loop's listener pool.",
           _pool("threads")),
    Family("takeover_listener_busy", "gauge", "Listener-pool threads running listeners.", _pool("busy")),
    Family("takeover_listener_queue_depth", "gauge",
           "WebSockets whose events wait for a listener-pool thread.", _pool("queued")),
    Family("takeover_hub_healthy", "gauge", "1 if every hub of every process reaches its broker, else 0.",
           _hub_healthy, mode="livemin"),
    Family("takeover_hub_members", "gauge", "Room memberships held by the hubs.", _hub_members),
    Family("takeover_hub_deliveries", "counter", "Hub messages written to members (one per member).",
           _hub_sum("deliveries")),
    Family("takeover_hub_gaps", "counter", "Gaps reported: messages missed here and not retained.",
           _hub_sum("gaps")),
)

LAG_NAME = "takeover_hub_delivery_lag_seconds"
LAG_HELP = "Seconds from a hub message's publish to its write to the members of this process."


def lag_histogram(figures: dict[str, Any]) -> Iterator[tuple[float, int]] | None:
    """The lag histogram's (upper bound, count in that bucket alone) pairs, the last bound +Inf;
    None when the process has no hub."""
    hubs = figures["hubs"]
    if not hubs:
        return None
    bounds = [*hubs[0]["lag"]["bounds"], float("inf")]
    counts = [sum(hub["lag"]["buckets"][index] for hub in hubs) for index in range(len(bounds))]
    return zip(bounds, counts, strict=True)


def le_label(bound: float) -> str:
    """A bucket's ``le`` label as Prometheus writes it (``+Inf``, ``0.005``, ``1.0``)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


def lag_sum(figures: dict[str, Any]) -> float:
    """The lags' sum, in seconds."""
    return float(sum(hub["lag"]["sum"] for hub in figures["hubs"]))
