"""Servers run as processes by the tests: ``start_server(script)`` waits for its ``ws://`` line."""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.paths import ROOT

LISTENING = re.compile(rb"ws://[^:]+:(\d+)/")


@dataclass
class ServerProcess:
    """A server started as its own process; ``port`` is the one it printed."""

    process: subprocess.Popen[bytes]
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    def stop(self) -> int:
        return stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10) -> int:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds; its exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def start_server(script: str | Path, *args: str, timeout: float = 20) -> ServerProcess:
    """Start ``script --host 127.0.0.1 --port 0 *args`` and wait for its listening line."""
    command = [sys.executable, str(script), "--host", "127.0.0.1", "--port", "0", *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, env=env
    )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = LISTENING.search(line)
        if match:
            return ServerProcess(process, "127.0.0.1", int(match.group(1)))
    process.kill()
    raise RuntimeError(f"{script} did not start: {b''.join(lines).decode(errors='replace')}")


class OutputLines:
    """A process's output, read line by line by a thread of its own: waits have timeouts, not sleeps."""

    def __init__(self, stream: IO[bytes] | None) -> None:
        assert stream is not None, "start the process with stdout=subprocess.PIPE"
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace")
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def next_line(self, timeout: float) -> str | None:
        """The next line; None at the end of the output; queue.Empty after ``timeout`` seconds."""
        line = self._queue.get(timeout=max(0.0, timeout))
        if line is None:
            self._queue.put(None)  # the end stays visible to later waits
        return line

    def wait_for(self, pattern: re.Pattern[str] | str, timeout: float) -> re.Match[str] | None:
        """The first line from now on that matches ``pattern``; None at the end or after ``timeout``."""
        deadline = time.monotonic() + timeout
        for _ in range(1_000_000):
            try:
                line = self.next_line(deadline - time.monotonic())
            except queue.Empty:
                return None
            if line is None:
                return None
            match = re.search(pattern, line)
            if match:
                return match
        return None

    def wait_output(self, holds: Callable[[str], bool], timeout: float) -> bool:
        """Wait until ``holds(output)``, checked as each line arrives; False at the end or ``timeout``."""
        deadline = time.monotonic() + timeout
        for _ in range(1_000_000):
            if holds(self.output):
                return True
            try:
                if self.next_line(deadline - time.monotonic()) is None:
                    return holds(self.output)
            except queue.Empty:
                return False
        return False

    def join(self, timeout: float) -> None:
        """Wait for the end of the output (the process's workers may hold the pipe a moment longer)."""
        self._thread.join(timeout)
