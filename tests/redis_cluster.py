"""A real Redis Cluster for the tests: redis-servers on free ports, joined by ``redis-cli --cluster create``.

Debian's redis-server and redis-cli (7.0). Each node runs in its own directory
without persistence, with a short ``cluster-node-timeout`` so that a replica
takes over a killed master within seconds.
"""

from __future__ import annotations

import random
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

from tests.redis_server import HOST, RedisServer

NODE_TIMEOUT_MS = 1000


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def node_port(count: int = 1) -> int:
    """A free port whose cluster bus port (port + 10000) is free too, both below 65536; with
    ``count``, the first of that many such ports in a row."""
    for _ in range(1000):
        port = random.randrange(20000, 30000 - count)
        if all(_free(port + n) and _free(port + n + 10000) for n in range(count)):
            return port
    raise RuntimeError("no free ports for a cluster node")


def redis_cli(*args: str, timeout: float = 60) -> str:
    cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
    done = subprocess.run([cli, *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"redis-cli {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return done.stdout


class RedisCluster:
    """``masters`` masters with ``replicas`` replicas each; ``url`` is the hub's (two seed nodes)."""

    def __init__(
        self, directory: Path, masters: int = 3, replicas: int = 0, *,
        tls: ssl.SSLContext | None = None, tls_args: tuple[str, ...] = (), cli_args: tuple[str, ...] = (),
    ) -> None:
        """``tls``: every node speaks TLS only, to clients and to each other (``tls_args`` name the
        certificates; ``cli_args`` are what redis-cli then needs, such as ``--tls --cacert F``)."""
        self.nodes: list[RedisServer] = []
        for n in range(masters * (1 + replicas)):
            (directory / f"node{n}").mkdir()
            args = (
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--cluster-require-full-coverage", "no",
                *(("--tls-cluster", "yes", "--tls-replication", "yes") if tls else ()), *tls_args,
            )
            self.nodes.append(RedisServer(directory / f"node{n}", node_port(), tls=tls, args=args))
        self.replicas = replicas
        self.cli_args = cli_args

    @property
    def url(self) -> str:
        return f"redis+cluster://{HOST}:{self.nodes[0].port},{HOST}:{self.nodes[1].port}"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"{HOST}:{node.port}" for node in self.nodes]
        replicas = str(self.replicas)
        create = ("--cluster", "create", *addresses, "--cluster-replicas", replicas, "--cluster-yes")
        redis_cli(*self.cli_args, *create)
        self.wait_ok()
        self.wait_replicas()

    def wait_replicas(self, timeout: float = 30) -> None:
        """Until every replica has synced with its master (only then may it take over)."""
        deadline = time.monotonic() + timeout
        for node in self.alive():
            while "role:slave" in (info := self.info(node, "info", "replication")):
                if "master_link_status:up" in info and "master_sync_in_progress:0" in info:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"a replica did not sync within {timeout} s: {info}")
                time.sleep(0.1)  # replication's own progress: nothing to wait on from here

    def info(self, node: RedisServer, *command: str) -> str:
        return redis_cli(*self.cli_args, "-h", HOST, "-p", str(node.port), *command, timeout=10)

    def alive(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.process is not None]

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every live node says ``cluster_state:ok`` and agrees on the masters."""
        deadline = time.monotonic() + timeout
        while True:
            states = [self.info(node, "cluster", "info") for node in self.alive()]
            if all("cluster_state:ok" in state for state in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster is not ok after {timeout} s: {states}")
            time.sleep(0.1)  # the cluster's own gossip: nothing to wait on from here

    def masters(self) -> dict[str, tuple[RedisServer, list[tuple[int, int]]]]:
        """Each master's node id: its server and slot ranges (from a live node's CLUSTER NODES)."""
        ports = {node.port: node for node in self.alive()}
        found: dict[str, tuple[RedisServer, list[tuple[int, int]]]] = {}
        for line in self.info(self.alive()[0], "cluster", "nodes").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            ranges = []
            for item in fields[8:]:
                if item.startswith("["):
                    continue  # a slot being migrated or imported
                start, _, end = item.partition("-")
                ranges.append((int(start), int(end or start)))
            if port in ports:
                found[fields[0]] = (ports[port], ranges)
        return found

    def master_of(self, slot: int) -> tuple[str, RedisServer]:
        for node_id, (server, ranges) in self.masters().items():
            if any(start <= slot <= end for start, end in ranges):
                return node_id, server
        raise AssertionError(f"no master serves slot {slot}")

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()
