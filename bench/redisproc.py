"""A throwaway redis-server for the fan-out scenario: a free port on 127.0.0.1, a temporary
directory, no persistence (``--save '' --appendonly no``), killed and removed afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.loadgen import STOP_TIMEOUT, child_setup, free_port

REDIS_SERVER = "redis-server"
READY_TIMEOUT = 10.0  # seconds for redis-server to answer PING


def ping(port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis server on 127.0.0.1:``port`` answers PING (in RESP, by hand)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
            connection.sendall(b"*1\r\n$4\r\nPING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``redis-server`` in its own session and directory; ``stop()`` kills it and removes both."""

    def __init__(self, log: Any, cpus: set[int] | None = None) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="takeover-bench-redis-"))
        command = [
            REDIS_SERVER,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--loglevel", "warning",
        ]
        log.write(f"\n=== {time.strftime('%H:%M:%S')} redis: {' '.join(command)}\n")
        log.flush()
        self.process = subprocess.Popen(
            command,
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=child_setup(cpus),
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self) -> None:
        """Wait (at most READY_TIMEOUT) until it answers PING."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with status {self.process.returncode} (see the log)")
            if ping(self.port):
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer PING within {READY_TIMEOUT:g} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            for signum in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.process.pid, signum)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(STOP_TIMEOUT)
                    break
                except subprocess.TimeoutExpired:
                    continue
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
