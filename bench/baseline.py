"""``python -m bench --baseline REV``: takeover at REV measured in the same run as the current code.

REV is checked out into a temporary ``git worktree`` (detached, outside the
repository's tree), given the C speedups (the current build copied in when
``takeover/protocol/_speedups.c`` is the same at REV, else built in place with
``setup.py build_ext --inplace``), and removed after the run. Its rows,
``takeover@REV``, are the socket-mode and in-app (Flask) servers and the
gunicorn gthread (handed-over) one started from that worktree (its own
``examples/echo.py`` and ``examples.flask_echo:app``; the gthread row runs this
checkout's bench/servers/gunicorn_echo.py, so that both sides have the same
gunicorn settings) with the worktree first on PYTHONPATH; each server prints the ``takeover`` it
imported (bench/servers/_launch.py) and the harness refuses a measurement whose
import came from elsewhere. The rows join the ordinary ones, so they are
measured in the same interleaved rounds.
"""

from __future__ import annotations

import dataclasses
import filecmp
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, TypeVar

from bench.config import PY, ROOT
from bench.specs import SERVERS, FanoutSpec, ServerSpec

#: The rows that get a ``takeover@REV`` twin: (key, what the twin's label says).
BASELINE_OF = {
    "takeover": "socket mode",
    "takeover-inapp": "in-app, Flask",
    "gunicorn-gthread": "gunicorn gthread, handed over",
}
SPEEDUPS_SOURCE = "takeover/protocol/_speedups.c"
COMPARED = ("takeover", "examples")  # the code the baseline rows run from REV
BUILD_TIMEOUT = 300.0  # seconds for build_ext
GIT_TIMEOUT = 120.0
#: A bench row of either kind: the server loop's or the fan-out scenarios'.
Row = TypeVar("Row", ServerSpec, FanoutSpec)


def _git(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


class Baseline:
    """A temporary worktree of ``rev``; use as a context manager (it is removed on exit)."""

    def __init__(self, rev: str) -> None:
        self.rev = rev
        self.commit = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        self.short = _git("rev-parse", "--short", self.commit)
        self.path: Path | None = None
        #: Whether takeover/ and examples/ are the same at REV as in this checkout (then
        #: before/after measures nothing but the machine's noise).
        self.same_code = (
            subprocess.run(
                ["git", "diff", "--quiet", self.commit, "--", *COMPARED],
                cwd=ROOT,
                capture_output=True,
                timeout=GIT_TIMEOUT,
            ).returncode
            == 0
        )
        #: How the worktree got its C speedups: "copied ..." or "built ...".
        self.speedups = ""

    # -- the worktree -----------------------------------------------------

    def create(self) -> Path:
        """Check the commit out into a new temporary directory, with the C extension."""
        if self.path is not None:
            raise RuntimeError(f"the baseline's worktree exists already: {self.path}")
        # An empty directory of a unique name (concurrent runs never collide), which
        # git accepts for a new worktree; remove() cleans up from here on, whatever fails.
        path = self.path = Path(tempfile.mkdtemp(prefix=f"takeover-baseline-{self.short}-"))
        try:
            _git("worktree", "add", "--detach", str(path), self.commit)
            self.speedups = self._speedups(path)
        except BaseException:  # also SIGTERM's SystemExit and Ctrl-C
            self.remove()
            raise
        return path

    def _speedups(self, path: Path) -> str:
        source = path / SPEEDUPS_SOURCE
        if not source.exists():
            return "none (REV has no takeover/protocol/_speedups.c)"
        built = sorted((ROOT / "takeover" / "protocol").glob("_speedups.*.so"))
        if built and filecmp.cmp(source, ROOT / SPEEDUPS_SOURCE, shallow=False):
            for library in built:
                shutil.copy2(library, path / "takeover" / "protocol" / library.name)
            return f"copied from the current build ({SPEEDUPS_SOURCE} is the same at {self.short})"
        done = subprocess.run(
            [PY, "setup.py", "build_ext", "--inplace"],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
        )
        if done.returncode != 0 or not list((path / "takeover" / "protocol").glob("_speedups.*.so")):
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise RuntimeError(f"building the C speedups at {self.short} failed:\n{tail}")
        return f"built in place ({SPEEDUPS_SOURCE} differs at {self.short})"

    def remove(self) -> None:
        """Remove the worktree and its directory (also when someone deleted files in it)."""
        path, self.path = self.path, None
        if path is None:
            return
        try:
            _git("worktree", "remove", "--force", str(path))
        except (RuntimeError, subprocess.TimeoutExpired):
            # Built files make it "dirty" to older gits; --force covers that, and a
            # directory gone already is fine: remove what is left either way.
            shutil.rmtree(path, ignore_errors=True)
            # Only this worktree's own administrative entry, never `git worktree prune`
            # (other worktrees of the repository are not ours to touch).
            try:
                _git("worktree", "remove", "--force", str(path))
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(path, ignore_errors=True)

    def __enter__(self) -> Baseline:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # -- its servers ------------------------------------------------------

    def servers(self, current: list[ServerSpec] | None = None) -> list[ServerSpec]:
        """The ``takeover@REV`` twins of the takeover rows among ``current`` (default: all)."""
        keys = {spec.key for spec in (current if current is not None else SERVERS)}
        return [
            self._twin(spec, BASELINE_OF[spec.key], env={})
            for spec in SERVERS
            if spec.key in BASELINE_OF and spec.key in keys
        ]

    def fanout_servers(self, current: list[FanoutSpec]) -> list[FanoutSpec]:
        """The ``takeover@REV`` twins of the fan-out rows among ``current`` that REV can run: takeover's
        Hub on one Redis or memory:// (gunicorn started in the worktree, so that REV's
        bench/servers/hub_fanout.py and takeover are the ones imported)."""
        return [
            self._twin(spec, spec.label)
            for spec in current
            if spec.client == "ws" and spec.brokers == "one" and spec.app == "bench.servers.hub_fanout:app"
        ]

    def _twin(self, spec: Row, what: str, **changes: Any) -> Row:
        """``spec`` run from the worktree (its takeover first on PYTHONPATH, its cwd there)."""
        assert self.path is not None, "create() the worktree first"
        return dataclasses.replace(
            spec,
            key=f"{spec.key}@{self.short}",
            label=f"takeover@{self.short} ({what})",
            notes=f"{spec.notes}; run from a git worktree of {self.commit}",
            takeover_root=self.path,
            cwd=self.path,
            baseline_of=spec.key,
            **changes,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "rev": self.rev,
            "commit": self.commit,
            "short": self.short,
            "worktree": str(self.path) if self.path else None,
            "speedups": self.speedups,
            "same_code": self.same_code,
        }


def interleave(servers: list[Row], twins: list[Row]) -> list[Row]:
    """``servers`` with each baseline twin right after its current-code row."""
    out = []
    for spec in servers:
        out.append(spec)
        out.extend(twin for twin in twins if twin.baseline_of == spec.key)
    return out
