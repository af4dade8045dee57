"""Servers run as processes by the tests: ``start_server(script)`` waits for its ``ws://`` line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

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
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


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
