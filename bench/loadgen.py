"""Starting a server under test and waiting for its ready line; running bench/node/loadgen.js."""

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
from typing import Any

from bench.config import NOFILE, ROOT
from bench.specs import ServerSpec

READY_TIMEOUT = 20.0  # seconds for a server to print its ready line
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL


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


class ServerProcess:
    def __init__(self, spec: ServerSpec, scenario: str, cpus: set[int] | None, log: Any) -> None:
        self.spec = spec
        self.port = free_port()
        command = spec.command(scenario, self.port)
        assert command is not None
        self.command = command
        log.write(f"\n=== {time.strftime('%H:%M:%S')} {spec.key} {scenario}: {' '.join(command)}\n")
        log.flush()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
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
        try:
            line = self.lines.get(READY_TIMEOUT)
        except queue.Empty:
            raise RuntimeError(f"no ready line within {READY_TIMEOUT:g} s") from None
        if line is None:
            code = self.process.wait(5)
            raise RuntimeError(f"exited with status {code} before its ready line (see the log)")

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


def run_loadgen(
    params: dict[str, Any],
    server: ServerProcess,
    cpus: set[int] | None,
    on_event: Callable[[dict[str, Any], Any], None],
) -> dict[str, Any]:
    """Run loadgen.js with ``params``; call ``on_event(event, process)`` for each progress line."""
    budget = params["duration"] + params["warmup"] + params["timeout"] + params.get("hold", 0) + 30
    command = [
        "bash",
        "-c",
        f'ulimit -n {NOFILE}; exec node bench/node/loadgen.js "$1"',
        "loadgen",
        json.dumps(params),
    ]
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
