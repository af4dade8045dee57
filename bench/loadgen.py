"""Starting a server under test and waiting for its ready line; running bench/node/loadgen.js
(or the fan-out driver, bench/node/fanout.js)."""

from __future__ import annotations

import ctypes
import json
import os
import queue
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.config import NOFILE, PY, ROOT
from bench.specs import ServerSpec

READY_TIMEOUT = 20.0  # seconds for a server to print its ready line
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
LAUNCHER = ROOT / "bench" / "servers" / "_launch.py"
IMPORT_MARKER = "bench-import:"  # the launcher's line (bench/servers/_launch.py MARKER)


# -- processes --------------------------------------------------------------------------


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE for this process and so for its children; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = NOFILE
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            hard = wanted
        except (ValueError, OSError):
            wanted = hard
    if soft == resource.RLIM_INFINITY or soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
PR_SET_PDEATHSIG = 1


def child_setup(cpus: set[int] | None) -> Callable[[], None]:
    """What a child runs before exec: its CPU, and death with the harness (no stray servers)."""

    def setup() -> None:
        if _libc is not None:
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


class Lines:
    """The lines a process writes to a pipe, read by a thread (so reads can time out)."""

    def __init__(self, stream: Any, log: Any = None) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.log = log
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            if self.log is not None:
                self.log.write(line)
                self.log.flush()
            self.queue.put(line)
        self.queue.put(None)

    def get(self, timeout: float) -> str | None:
        """The next line; None at EOF; raises queue.Empty after ``timeout``."""
        return self.queue.get(timeout=timeout)


def launched(command: list[str]) -> list[str]:
    """``command`` (``PY script ...`` or ``PY -m module ...``) through bench/servers/_launch.py,
    which first prints the takeover the server imports."""
    if not command or command[0] != PY:
        raise ValueError(f"not a Python server command: {command}")
    return [PY, str(LAUNCHER), *command[1:]]


def with_pythonpath(env: dict[str, str], first: Path) -> dict[str, str]:
    """``env`` with ``first`` at the front of PYTHONPATH."""
    rest = env.get("PYTHONPATH", "")
    return dict(env, PYTHONPATH=str(first) + (os.pathsep + rest if rest else ""))


class ServerProcess:
    def __init__(self, spec: ServerSpec, scenario: str, cpus: set[int] | None, log: Any) -> None:
        self.spec = spec
        self.port = free_port()
        command = spec.command(scenario, self.port)
        assert command is not None
        env = dict(os.environ, PYTHONUNBUFFERED="1", **spec.env)
        if spec.takeover_root is not None:
            # Its takeover comes first on sys.path, and the server says which one it got.
            command = launched(command)
            env = with_pythonpath(env, spec.takeover_root)
        self.command = command
        #: What the server printed about its imports (bench/servers/_launch.py), once ready.
        self.imports: dict[str, str] = {}
        #: Its ready line, once ready.
        self.ready_line = ""
        where = f" (in {spec.cwd})" if spec.cwd != ROOT else ""
        log.write(
            f"\n=== {time.strftime('%H:%M:%S')} {spec.key} {scenario}: {' '.join(command)}{where}\n"
        )
        log.flush()
        self.process = subprocess.Popen(
            command,
            cwd=spec.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
            preexec_fn=child_setup(cpus),
        )
        self.lines = Lines(self.process.stdout, log)

    def wait_ready(self) -> None:
        """Wait for the ready line; for a takeover server, check what it imported first."""
        deadline = time.monotonic() + READY_TIMEOUT
        for _ in range(100):  # the import line, then the ready line; anything else is a bug
            try:
                line = self.lines.get(max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                raise RuntimeError(f"no ready line within {READY_TIMEOUT:g} s") from None
            if line is None:
                code = self.process.wait(5)
                raise RuntimeError(f"exited with status {code} before its ready line (see the log)")
            if line.startswith(IMPORT_MARKER):
                self.imports = parse_imports(line)
                continue
            self.ready_line = line.rstrip("\n")
            break
        root = self.spec.takeover_root
        if root is not None:
            check_imports(self.imports, root)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(STOP_TIMEOUT)


def parse_imports(line: str) -> dict[str, str]:
    """``{"takeover": path, "speedups": path or "none"}`` from the launcher's line."""
    fields = line[len(IMPORT_MARKER) :].split()
    return dict(field.split("=", 1) for field in fields if "=" in field)


def check_imports(imports: dict[str, str], root: Path) -> None:
    """Raise unless the server's takeover (and its C speedups, if any) come from ``root``."""
    takeover = imports.get("takeover")
    if takeover is None:
        raise RuntimeError("the server did not say which takeover it imported (no bench-import line)")
    base = root.resolve()
    if not Path(takeover).resolve().is_relative_to(base):
        raise RuntimeError(f"the server imported takeover from {takeover}, not from {base}")
    speedups = imports.get("speedups", "none")
    if speedups != "none" and not Path(speedups).resolve().is_relative_to(base):
        raise RuntimeError(f"the server found takeover's C speedups at {speedups}, not under {base}")


def run_loadgen(
    params: dict[str, Any],
    server: ServerProcess,
    cpus: set[int] | None,
    on_event: Callable[[dict[str, Any], Any], None],
    script: str = "loadgen.js",
    budget: float | None = None,
    native: list[str] | None = None,
) -> dict[str, Any]:
    """Run bench/node/``script`` with ``params`` (or the ``native`` command, which prints the same
    lines); call ``on_event(event, process)`` for each progress line. It is killed after
    ``budget`` seconds (by default loadgen.js's own limit plus 30 s)."""
    if budget is None:
        budget = params["duration"] + params["warmup"] + params["timeout"] + params.get("hold", 0) + 30
    driver = native if native is not None else ["node", f"bench/node/{script}", json.dumps(params)]
    command = ["bash", "-c", f'ulimit -n {NOFILE}; exec "$@"', "loadgen", *driver]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=child_setup(cpus),
    )
    lines = Lines(process.stdout)
    errors = Lines(process.stderr)
    deadline = time.monotonic() + budget
    result: dict[str, Any] | None = None
    try:
        while result is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"load generator still running after {budget:g} s")
            try:
                line = lines.get(remaining)
            except queue.Empty:
                continue
            if line is None:
                break
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "result":
                result = event
            else:
                on_event(event, process)
            if server.process.poll() is not None:
                raise RuntimeError(f"server exited with status {server.process.returncode} during the run")
    finally:
        if process.poll() is None:
            try:
                process.wait(10 if result is not None else 0.1)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    if result is None:
        stderr = []
        while True:
            try:
                line = errors.get(1)
            except queue.Empty:
                break
            if line is None:
                break
            stderr.append(line)
        raise RuntimeError("load generator ended without a result: " + "".join(stderr[-5:]).strip())
    return result
