"""Prometheus metrics and a live status page for takeover's WebSockets (``pip install takeover[metrics]``).

Two WSGI apps, to mount in any application (behind your own auth: see
docs/guides/operations.rst), or served on a port of their own by
``takeover serve --metrics-bind HOST:PORT``:

* :data:`wsgi_app`: the Prometheus exposition of every ``takeover_*`` metric
  (and of the application's own ``prometheus_client`` metrics);
* :data:`status_app`: an HTML page an operator reads at a glance, refreshed
  over a WebSocket of its own.

In one process the figures are summed when scraped (a custom collector:
nothing is paid per message). With several worker processes (gunicorn
``-w 4``, uWSGI ``processes``), set ``PROMETHEUS_MULTIPROC_DIR`` to an empty
directory in the server's environment, as ``prometheus_client``'s
multiprocess mode asks: every worker then copies its figures there once a
second, and whichever worker is scraped answers for all of them
(:mod:`takeover.metrics._processes`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from takeover._io.stats import STATS
from takeover.metrics._families import FAMILIES, LAG_HELP, LAG_NAME, lag_histogram, lag_sum, le_label
from takeover.metrics._processes import Exporter, forget_dead, multiprocess_directory, snapshots

try:
    import prometheus_client
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    from prometheus_client.registry import Collector
except ImportError as error:  # pragma: no cover - the extra is missing
    raise ImportError(
        "takeover.metrics needs prometheus_client: pip install 'takeover[metrics]'"
    ) from error

__all__ = ["Snapshot", "TakeoverCollector", "figures", "status_app", "wsgi_app"]

Snapshot = dict[str, Any]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class TakeoverCollector(Collector):
    """The ``takeover_*`` metrics of this process, summed from its plain counts when collected."""

    def collect(self) -> Iterator[Any]:
        yield from families(STATS.snapshot())


def families(snapshot: Snapshot) -> Iterator[Any]:
    """One process's figures as Prometheus metric families."""
    for family in FAMILIES:
        samples = family.read(snapshot)
        if not samples and not family.labels:
            continue
        made: Any = (CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily)(
            family.name, family.help, labels=family.labels
        )
        for labels, value in sorted(samples.items()):
            made.add_metric(list(labels), value)
        yield made
    buckets = lag_histogram(snapshot)
    if buckets is not None:
        cumulative, total = [], 0
        for bound, count in buckets:
            total += count
            cumulative.append((le_label(bound), total))
        yield HistogramMetricFamily(LAG_NAME, LAG_HELP, buckets=cumulative, sum_value=lag_sum(snapshot))


_lock = threading.Lock()
_exporter: Exporter | None = None
_collector: TakeoverCollector | None = None


def _setup() -> Exporter | None:
    """Multiprocess: this process's exporter, running. One process: takeover's collector, registered."""
    global _exporter, _collector
    directory = multiprocess_directory()
    with _lock:
        if directory is not None:
            if _exporter is None:
                from prometheus_client import values

                if not getattr(values.ValueClass, "_multiprocess", False):
                    raise RuntimeError(
                        "PROMETHEUS_MULTIPROC_DIR was set after prometheus_client was imported: set it in the"
                        " server's environment (before the application is loaded)"
                    )
                _exporter = Exporter(directory)
                # A worker forked from a process that imported this (gunicorn --preload, uWSGI
                # without lazy-apps) copies its own figures from its start, scraped or not.
                os.register_at_fork(after_in_child=_exporter.ensure_running)
                # uWSGI forks its workers in C, without those hooks: the first open or refused
                # upgrade in each starts it there (a comparison of pids, once a connection).
                STATS.on_event = _exporter.ensure_running
            _exporter.ensure_running()
            return _exporter
        if _collector is None:
            _collector = TakeoverCollector()
            prometheus_client.REGISTRY.register(_collector)
        return None


def figures() -> list[Snapshot]:
    """Every live process's figures (this one's first), as the status page shows them."""
    return snapshots(_setup())


def _metrics_app() -> WSGIApp:
    exporter = _setup()
    if exporter is None:
        return prometheus_client.make_wsgi_app(prometheus_client.REGISTRY)
    from prometheus_client import multiprocess

    registry = prometheus_client.CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=exporter.directory)  # type: ignore[no-untyped-call]
    exposition: WSGIApp = prometheus_client.make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        exporter.ensure_running()  # a worker forked after the import starts its own here
        exporter.sync()  # this process's figures as of now; the others' as of their last copy
        forget_dead(exporter.directory)
        return exposition(environ, start_response)

    return app


class _Lazy:
    """A WSGI app made on its first request, in the process that serves it (after the fork)."""

    def __init__(self, make: Callable[[], WSGIApp], doc: str) -> None:
        self._make = make
        self._app: WSGIApp | None = None
        self._lock = threading.Lock()
        self.__doc__ = doc

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        app = self._app
        if app is None:
            with self._lock:  # two first requests at once make one
                app = self._app
                if app is None:
                    app = self._app = self._make()
        return app(environ, start_response)


#: The Prometheus exposition (text, or OpenMetrics when asked) of every ``takeover_*`` metric,
#: summed over the process group's workers in multiprocess mode.
wsgi_app: WSGIApp = _Lazy(_metrics_app, "Prometheus exposition of takeover's metrics (see takeover.metrics).")


def _status_app() -> WSGIApp:
    from takeover.metrics.status import StatusApp

    app: WSGIApp = StatusApp()
    return app


#: The live status page (HTML; JSON with ``?format=json``; a WebSocket for its updates).
status_app: WSGIApp = _Lazy(_status_app, "The live status page of takeover (see takeover.metrics.status).")

# A process that imports this module counts itself in from the start: its exporter runs
# from now on (multiprocess), even if it is never the one scraped.
if multiprocess_directory() is not None:
    _setup()
