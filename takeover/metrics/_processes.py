"""Every worker's figures in one place: ``prometheus_client``'s multiprocess mode, fed once a second.

gunicorn's and uWSGI's workers are processes: a scrape reaches one of them,
which must answer for all. ``prometheus_client`` solves this with a directory
(``PROMETHEUS_MULTIPROC_DIR``) where each process keeps its values in a
memory-mapped file, and a collector that sums the files when scraped. Writing
there costs a lock and a write per change, too much for each message; so each
process keeps counting in plain fields (takeover._io.stats) and an
:class:`Exporter` thread copies its totals into its files every ``interval``
seconds, and when a scrape or the status page asks. It also writes the
process's whole snapshot as ``takeover-status-<pid>.json`` beside them, for
the status page (rooms, closes by minute: more than metrics carry).

A process that has exited leaves its files: its counters stay in the sums (as
``prometheus_client`` keeps them), but its ``live*`` gauges and its status file
are dropped at the next scrape, whoever scrapes (:func:`forget_dead`); the
exporter also drops its own at exit. gunicorn's ``child_exit`` hook calling
``prometheus_client.multiprocess.mark_process_dead`` is then optional.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import json
import os
import re
import threading
from typing import Any

from takeover._io.stats import STATS
from takeover._log import warn_once
from takeover.metrics._families import FAMILIES, LAG_HELP, LAG_NAME, lag_histogram, lag_sum, le_label

__all__ = ["DEFAULT_INTERVAL", "Exporter", "forget_dead", "multiprocess_directory", "snapshots"]

#: Seconds between two copies of a process's figures into the shared directory.
DEFAULT_INTERVAL = 1.0
_STATUS = re.compile(r"takeover-status-(\d+)\.json$")
_LIVE_GAUGE = re.compile(r"gauge_live\w+?_(\d+)\.db$")


def multiprocess_directory() -> str | None:
    """``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's setting), or None for one process."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir") or None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's: alive
    return True


def forget_dead(directory: str) -> None:
    """Drop the live gauges and status files of processes that have exited."""
    from prometheus_client import multiprocess

    dead: set[int] = set()
    for path in glob.glob(os.path.join(directory, "*")):
        match = _STATUS.search(path) or _LIVE_GAUGE.search(path)
        if match is not None and int(match.group(1)) not in dead and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(directory, f"takeover-status-{pid}.json"))


class Exporter:
    """Copies this process's figures into the multiprocess directory (see the module's docstring)."""

    def __init__(self, directory: str, interval: float = DEFAULT_INTERVAL) -> None:
        self.directory = directory
        self.interval = interval
        self._lock = threading.Lock()
        self._values: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._pid = 0
        self._stop = threading.Event()

    def ensure_running(self) -> None:
        """Start the copying thread in this process (once; a forked child starts its own)."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._values = {}  # prometheus_client reopens its files in a new process
            self._stop = threading.Event()
            thread = threading.Thread(target=self._run, name="takeover-metrics", daemon=True)
            thread.start()
            atexit.register(self._exit, self._pid)

    def _run(self) -> None:
        stop = self._stop
        while not stop.wait(self.interval):
            try:
                self.sync()
            except Exception as error:  # never take the worker down for a figure; say it once
                warn_once(
                    f"metrics-copy-{type(error).__name__}",
                    "takeover.metrics: cannot copy this worker's figures to PROMETHEUS_MULTIPROC_DIR=%s"
                    " (%s); scrapes miss them until it is a writable directory",
                    self.directory, error,
                )

    def _exit(self, pid: int) -> None:
        if pid != os.getpid():
            return
        self._stop.set()
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]
            os.remove(os.path.join(self.directory, f"takeover-status-{pid}.json"))

    def sync(self) -> dict[str, Any]:
        """Copy the figures now; return the snapshot copied."""
        figures = STATS.snapshot()
        with self._lock:
            for family in FAMILIES:
                suffix = "_total" if family.kind == "counter" else ""
                for labels, value in family.read(figures).items():
                    self._value(family.kind, family.name, family.name + suffix, family.labels, labels,
                                family.help, family.mode).set(value)
            buckets = lag_histogram(figures)
            if buckets is not None:
                for bound, count in buckets:
                    value = self._value(
                        "histogram", LAG_NAME, LAG_NAME + "_bucket", ("le",), (le_label(bound),),
                        LAG_HELP, "",
                    )
                    value.set(count)
                lag = lag_sum(figures)
                self._value("histogram", LAG_NAME, LAG_NAME + "_sum", (), (), LAG_HELP, "").set(lag)
        path = os.path.join(self.directory, f"takeover-status-{figures['pid']}.json")
        temporary = f"{path}.{threading.get_ident()}.tmp"
        with open(temporary, "w") as file:
            json.dump(figures, file)
        os.replace(temporary, path)  # readers see the old file or the new one, never half
        return figures

    def _value(
        self, kind: str, metric: str, sample: str, names: tuple[str, ...], labels: tuple[str, ...], help: str,
        mode: str,
    ) -> Any:
        key = (sample, labels)
        value = self._values.get(key)
        if value is None:
            from prometheus_client import values

            # The multiprocess value class prometheus_client's own metrics use (values.ValueClass):
            # one float in this process's file of that kind, summed over the files when scraped.
            value = self._values[key] = values.ValueClass(
                kind, metric, sample, names, labels, help, multiprocess_mode=mode
            )
        return value


def snapshots(exporter: Exporter | None) -> list[dict[str, Any]]:
    """Each live process's latest figures, this one's fresh (one process: just its own)."""
    if exporter is None:
        return [STATS.snapshot()]
    own = exporter.sync()  # (the caller, takeover.metrics._setup, has it running)
    forget_dead(exporter.directory)
    found = [own]
    for path in sorted(glob.glob(os.path.join(exporter.directory, "takeover-status-*.json"))):
        match = _STATUS.search(path)
        if match is None or int(match.group(1)) == own["pid"]:
            continue
        try:
            with open(path) as file:
                found.append(json.load(file))
        except (OSError, ValueError):
            continue  # gone meanwhile
    return found
