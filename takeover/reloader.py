"""``--reload``: run the server in a child process, restart it when a ``.py`` file changes.

The parent never imports the application. It polls the modification times of
the ``.py`` files under some directories about once a second (bounded in files
and directories, skipping virtualenvs, caches and hidden directories), and
stops the child with SIGTERM before starting a new one. SIGINT and SIGTERM to
the parent stop the child and end the loop at once (a wake-up pipe, no polling).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from types import FrameType

__all__ = ["run_reloader", "warn"]

PROG = "takeover"


def warn(message: str) -> None:
    """One ``takeover: ...`` line on stderr."""
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


POLL_INTERVAL = 1.0
MAX_WATCHED_FILES = 4000
MAX_SCANNED_DIRS = 2000
CHILD_STOP_TIMEOUT = 10.0
SKIPPED_DIRS = frozenset({"node_modules", "__pycache__", "site-packages", "venv"})

Snapshot = dict[str, tuple[int, int]]


def _skip_dir(name: str, path: str) -> bool:
    return (
        name.startswith(".")  # .git, .venv, .tox, caches
        or name in SKIPPED_DIRS
        or os.path.isfile(os.path.join(path, "pyvenv.cfg"))  # any virtualenv
    )


class _Scanner:
    """Bounded scans of the ``.py`` files under some directories."""

    def __init__(self, roots: Sequence[str]) -> None:
        self.roots = [os.path.realpath(root) for root in roots]
        self.warned = False

    def _py_files(self) -> Iterator[str]:
        """The ``.py`` files under the roots, each once, from at most ``MAX_SCANNED_DIRS`` directories."""
        seen: set[str] = set()
        for root in self.roots:
            for directory, dirnames, filenames in os.walk(root):
                if directory in seen:  # a root inside another root
                    dirnames.clear()
                    continue
                if len(seen) >= MAX_SCANNED_DIRS:
                    return
                seen.add(directory)
                dirnames[:] = sorted(
                    name for name in dirnames if not _skip_dir(name, os.path.join(directory, name))
                )
                for name in sorted(filenames):
                    if name.endswith(".py"):
                        yield os.path.join(directory, name)

    def scan(self) -> Snapshot:
        """``{path: (mtime_ns, size)}`` for at most ``MAX_WATCHED_FILES`` files."""
        found: Snapshot = {}
        for path in self._py_files():
            if len(found) >= MAX_WATCHED_FILES:
                if not self.warned:
                    self.warned = True
                    warn(f"--reload watches only the first {MAX_WATCHED_FILES} .py files it finds")
                break
            try:
                stat = os.stat(path)
            except OSError:  # removed while we looked
                continue
            found[path] = (stat.st_mtime_ns, stat.st_size)
        return found


def _first_change(old: Snapshot, new: Snapshot) -> str | None:
    for path, state in new.items():
        if old.get(path) != state:
            return path
    for path in old:
        if path not in new:
            return path
    return None


class _StopSignals:
    """SIGINT and SIGTERM set ``received`` and wake :meth:`wait` at once."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._old_wakeup = signal.set_wakeup_fd(self._write)
        self._old_handlers = {
            signum: signal.signal(signum, self._handle) for signum in (signal.SIGINT, signal.SIGTERM)
        }

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds or until a stop signal; whether one came."""
        if self.received is None:
            ready, _, _ = select.select([self._read], [], [], timeout)
            if ready:
                try:
                    if os.read(self._read, 512) and self.received is None:
                        self.received = signal.SIGTERM  # the handler runs just after
                except BlockingIOError:
                    pass
        return self.received is not None

    def restore(self) -> None:
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._old_wakeup)
        os.close(self._read)
        os.close(self._write)


def _stop_child(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(CHILD_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            warn(f"the server did not stop within {CHILD_STOP_TIMEOUT:g} s; killing it")
            child.kill()
            child.wait()


def run_reloader(child_args: Sequence[str], roots: Sequence[str]) -> int:
    """Run ``python -m takeover *child_args`` and restart it when a ``.py`` file under ``roots`` changes.

    Returns 0 once SIGINT or SIGTERM has stopped the child.
    """
    scanner = _Scanner(roots)
    signals = _StopSignals()
    command = [sys.executable, "-m", "takeover", *child_args]
    child: subprocess.Popen[bytes] | None = None
    try:
        snapshot = scanner.scan()
        child = subprocess.Popen(command)
        reported = False
        while not signals.wait(POLL_INTERVAL):
            if child.poll() is not None and not reported:
                reported = True
                warn(f"the server exited with status {child.returncode}; it restarts when a file changes")
            current = scanner.scan()
            changed = _first_change(snapshot, current)
            if changed is None:
                continue
            snapshot = current
            warn(f"{os.path.relpath(changed)} changed; restarting")
            _stop_child(child)
            if signals.received is not None:
                break
            child = subprocess.Popen(command)
            reported = False
    finally:
        if child is not None:
            _stop_child(child)
        signals.restore()
    return 0
