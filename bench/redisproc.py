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


def _cluster_port() -> int:
    import random

    for _ in range(1000):
        port = random.randrange(20000, 30000)
        ok = True
        for candidate in (port, port + 10000):
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", candidate))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisServer:
    """``redis-server`` in its own session and directory; ``stop()`` kills it and removes both."""

    def __init__(self, log: Any, cpus: set[int] | None = None, cluster: bool = False) -> None:
        # A cluster node's bus port is its port + 10000: below 65536.
        self.port = free_port() if not cluster else _cluster_port()
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
            *(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"] if cluster else []),
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


class RedisCluster:
    """``masters`` redis-servers with cluster mode on, joined by ``redis-cli --cluster create``."""

    def __init__(self, log: Any, masters: int = 3) -> None:
        self.nodes: list[RedisServer] = []
        for _ in range(masters):
            self.nodes.append(RedisServer(log, cluster=True))
        self.log = log

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:2])

    @property
    def pids(self) -> list[int]:
        return [node.pid for node in self.nodes]

    def wait_ready(self) -> None:
        for node in self.nodes:
            node.wait_ready()
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        done = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )
        self.log.write(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed (see the log): {done.stderr.strip()}")
        deadline = time.monotonic() + READY_TIMEOUT
        for node in self.nodes:  # until each has heard of every slot's owner
            while "cluster_state:ok" not in subprocess.run(
                [cli, "-p", str(node.port), "cluster", "info"], capture_output=True, text=True, timeout=10
            ).stdout:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the Redis Cluster was not ok within {READY_TIMEOUT:g} s")
                time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class Brokers:
    """What a fan-out row's hub runs on: one redis-server, several (``shards``), or a cluster."""

    def __init__(self, kind: str, log: Any, count: int = 3) -> None:
        self.kind = kind
        servers = 0 if kind == "cluster" else 1 if kind == "one" else count
        self.servers = [RedisServer(log) for _ in range(servers)]
        self.cluster = RedisCluster(log, count) if kind == "cluster" else None

    @property
    def url(self) -> str:
        """The hub's URL (several servers: their URLs joined with commas)."""
        if self.cluster is not None:
            return self.cluster.url
        return ",".join(server.url for server in self.servers)

    @property
    def publish_url(self) -> str:
        """A plain redis:// URL for Flask-SocketIO's message queue (the first server)."""
        return self.servers[0].url if self.servers else self.url

    @property
    def pids(self) -> list[int]:
        return self.cluster.pids if self.cluster is not None else [server.pid for server in self.servers]

    def wait_ready(self) -> None:
        if self.cluster is not None:
            self.cluster.wait_ready()
        for server in self.servers:
            server.wait_ready()

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        for server in self.servers:
            server.stop()
