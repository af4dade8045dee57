"""A real redis-server for the tests: on a free port, in a temporary directory, killed at will."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

from tests.processes import free_port

HOST = "127.0.0.1"



def redis_server_path() -> str:
    path = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(path).exists():
        raise RuntimeError("no redis-server: Debian's package redis-server (.ci/run installs it)")
    return path


class RedisServer:
    """``redis-server`` without persistence: a restart loses every key, as one without a disk does."""

    def __init__(
        self, directory: Path, port: int | None = None, *, tls: ssl.SSLContext | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        """``tls``: the port speaks TLS only (``args`` name the certificates), probed with this context."""
        self.directory = directory
        self.port = port or free_port()
        self.tls = tls
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        ports = ["--port", "0", "--tls-port", str(self.port)] if self.tls else ["--port", str(self.port)]
        command = [
            redis_server_path(), *ports, "--bind", HOST, "--save", "", "--appendonly", "no",
            "--dir", str(self.directory), "--daemonize", "no", "--loglevel", "warning", *self.args,
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5) as plain:
                    probe = self.tls.wrap_socket(plain, server_hostname=HOST) if self.tls else plain
                    probe.sendall(b"PING\r\n")
                    if probe.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                time.sleep(0.02)  # the port is not bound yet: there is no event to wait for
        raise RuntimeError(f"redis-server did not answer on {self.port} within {timeout} s")

    def kill(self) -> None:
        """SIGKILL: the server and every key go at once."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()
