"""``make demo-cluster``: one chat room across two servers and five processes, through Redis.

::

    python -m examples.chat.cluster [--redis-port 6390] [--port 8000] [--second-port 8001] [--workers 4]
                                    [--redis-cluster]

starts, from the repository's root:

* ``redis-server`` on 127.0.0.1:6390, in a temporary directory, without
  persistence (a restart loses the room, as a Redis without a disk does);
* the chat on gunicorn, ``-k takeover.gunicorn.Worker`` with 4 gevent workers,
  on 127.0.0.1:8000;
* the chat on ``takeover serve`` on 127.0.0.1:8001, standing in for another
  machine;

both servers with ``TAKEOVER_HUB=redis://127.0.0.1:6390/0``. With
``--redis-cluster`` (``make demo-cluster REDIS_CLUSTER=1``) Redis is a Redis
Cluster of three masters on 127.0.0.1:6390-6392 instead, joined with
``redis-cli --cluster create``, and the hub's URL is
``redis+cluster://127.0.0.1:6390,127.0.0.1:6391``. Open
http://127.0.0.1:8000/ and http://127.0.0.1:8001/: the pages talk to each
other and see one presence list, whichever process serves them. Each line of
output is prefixed with the process it came from. Ctrl-C (or SIGTERM) stops
the servers, which close their WebSockets with 1001, then Redis.

The test ``tests/interop/test_browser_cluster.py`` starts the cluster with
these functions, on free ports.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parents[2]
APP = "examples.chat.app:app"
GUNICORN_CONFIG = Path(__file__).resolve().parent / "gunicorn_conf.py"
HOST = "127.0.0.1"
REDIS_PORT = 6390
PORT = 8000
SECOND_PORT = 8001
WORKERS = 4
START_TIMEOUT = 30.0  # seconds for a process to say it is ready
STOP_TIMEOUT = 15.0  # seconds for a process to stop after SIGTERM, before SIGKILL

# What each process prints once it accepts connections.
REDIS_READY = re.compile(r"Ready to accept connections")
GUNICORN_READY = re.compile(r"Listening at: http://")
SERVE_READY = re.compile(r"takeover serving .* on ws://")


class Child:
    """A process of the cluster, in a session of its own (Ctrl-C reaches only this script).

    Its output (stdout and stderr) is read line by line by a thread: kept in
    ``lines``, and written to ``echo`` with ``[label]`` in front if given.
    ``port`` is the one it listens on.
    """

    def __init__(
        self,
        label: str,
        port: int,
        command: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        echo: TextIO | None = None,
    ) -> None:
        self.label = label
        self.port = port
        self.command = list(command)
        self.echo = echo
        self.lines: list[str] = []
        self.ended = threading.Event()
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=dict(os.environ if env is None else env, PYTHONUNBUFFERED="1"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, name=f"output of {label}", daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode(errors="replace")
            if self.echo is not None:  # before a waiter hears of it: "ready" is never printed ahead of it
                self.echo.write(f"[{self.label}] {line}")
                self.echo.flush()
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.ended.set()
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = START_TIMEOUT, start: int = 0) -> str:
        """The first output line from index ``start`` on matching ``pattern``; RuntimeError if none comes."""
        deadline = time.monotonic() + timeout
        with self._changed:
            index = start
            while True:  # each pass handles new lines or ends: bounded by the deadline
                for line in self.lines[index:]:
                    if pattern.search(line):
                        return line
                index = len(self.lines)
                remaining = deadline - time.monotonic()
                if self.ended.is_set() or remaining <= 0:
                    why = "it exited" if self.ended.is_set() else f"nothing within {timeout:g} s"
                    raise RuntimeError(
                        f"{self.label}: no line matching {pattern.pattern!r} ({why}):\n{self.output}"
                    )
                self._changed.wait(remaining)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM (a graceful stop), SIGKILL after ``timeout`` seconds; the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL, at once: for Redis, the room's data goes with it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(STOP_TIMEOUT)


def redis_server() -> str:
    path = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(path).exists():
        raise RuntimeError("no redis-server: install it (Debian: apt-get install redis-server)")
    return path


def hub_url(redis_port: int) -> str:
    return f"redis://{HOST}:{redis_port}/0"


def start_redis(port: int, directory: Path, *, echo: TextIO | None = None) -> Child:
    """``redis-server`` on ``HOST:port``, keeping nothing on disk, ready to take commands."""
    command = [
        redis_server(), "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
        "--dir", str(directory), "--daemonize", "no",
    ]
    child = Child(f"redis :{port}", port, command, echo=echo)
    return ready(child, REDIS_READY)


def start_redis_cluster(ports: Sequence[int], directory: Path, *, echo: TextIO | None = None) -> list[Child]:
    """A Redis Cluster of ``len(ports)`` masters (three at least), nothing on disk, its slots assigned."""
    nodes = []
    try:
        for port in ports:
            node_dir = directory / f"node-{port}"
            node_dir.mkdir(exist_ok=True)
            command = [
                redis_server(), "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
                "--dir", str(node_dir), "--daemonize", "no", "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
            ]
            nodes.append(ready(Child(f"redis :{port}", port, command, echo=echo), REDIS_READY))
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        addresses = [f"{HOST}:{port}" for port in ports]
        create = [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"]
        done = subprocess.run(create, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")
        deadline = time.monotonic() + START_TIMEOUT
        for port in ports:  # until every node has heard of every slot's owner
            info = [cli, "-h", HOST, "-p", str(port), "cluster", "info"]
            while "cluster_state:ok" not in subprocess.run(info, capture_output=True, text=True).stdout:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the Redis Cluster is not ok after {START_TIMEOUT:g} s")
                time.sleep(0.1)  # the cluster's own gossip: nothing here to wait on
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


def start_gunicorn(port: int, hub: str, *, workers: int = WORKERS, echo: TextIO | None = None) -> Child:
    """The chat on gunicorn's gevent workers (takeover's), with ``TAKEOVER_HUB=hub``, listening."""
    command = [
        sys.executable, "-m", "gunicorn", "-k", "takeover.gunicorn.Worker", "-w", str(workers),
        "--bind", f"{HOST}:{port}", "--config", str(GUNICORN_CONFIG), APP,
    ]
    child = Child(f"gunicorn :{port}", port, command, env=dict(os.environ, TAKEOVER_HUB=hub), echo=echo)
    return ready(child, GUNICORN_READY)


def start_serve(port: int, hub: str, *, echo: TextIO | None = None) -> Child:
    """The chat on ``takeover serve --hub hub``, listening."""
    command = [sys.executable, "-m", "takeover", "serve", APP, "--hub", hub, "--bind", f"{HOST}:{port}"]
    child = Child(f"serve :{port}", port, command, env=dict(os.environ, TAKEOVER_HUB=hub), echo=echo)
    return ready(child, SERVE_READY)


def ready(child: Child, pattern: re.Pattern[str]) -> Child:
    """``child`` once it printed ``pattern``; stopped, and RuntimeError, if it does not."""
    try:
        child.wait_for(pattern)
    except BaseException:  # also Ctrl-C meanwhile: the child is in a session of its own
        child.stop()
        raise
    return child


def check_free(port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            raise RuntimeError(f"port {port} on {HOST} is in use: pick another (see --help)") from None


class Cluster:
    """Redis and the chat's two servers, started in ``directory``; ``stop()`` stops those running then.

    ``redis`` and ``servers`` (``"gunicorn"``, ``"serve"``) may be replaced by
    new processes (a restart): ``stop()`` takes them as they are when it runs.
    """

    def __init__(self, directory: Path, *, echo: TextIO | None = None) -> None:
        self.directory = directory
        self.echo = echo
        self.redis: Child | None = None
        self.cluster_nodes: list[Child] = []  # with redis_cluster=True
        self.servers: dict[str, Child] = {}

    @property
    def hub(self) -> str:
        if self.cluster_nodes:
            return "redis+cluster://" + ",".join(f"{HOST}:{node.port}" for node in self.cluster_nodes[:2])
        assert self.redis is not None
        return hub_url(self.redis.port)

    def start(
        self, redis_port: int, port: int, second_port: int, *, workers: int = WORKERS,
        redis_cluster: bool = False,
    ) -> None:
        """Redis (or a Redis Cluster on ``redis_port`` and the two ports after it), then the servers."""
        if redis_cluster:
            ports = [redis_port, redis_port + 1, redis_port + 2]
            self.cluster_nodes = start_redis_cluster(ports, self.directory, echo=self.echo)
        else:
            self.redis = start_redis(redis_port, self.directory, echo=self.echo)
        self.servers["gunicorn"] = start_gunicorn(port, self.hub, workers=workers, echo=self.echo)
        self.servers["serve"] = start_serve(second_port, self.hub, echo=self.echo)

    def restart_redis(self) -> None:
        """SIGKILL Redis (the room's data goes with it) and start an empty one on the same port."""
        assert self.redis is not None
        self.redis.kill()
        self.redis = start_redis(self.redis.port, self.directory, echo=self.echo)

    def stop(self) -> None:
        """Stop the servers together (each closes its WebSockets with 1001), then Redis."""
        servers = list(self.servers.values())
        for child in servers:
            if child.process.poll() is None:
                child.process.terminate()
        for child in servers:
            child.stop()
        for node in self.cluster_nodes:
            node.stop()
        if self.redis is not None:
            self.redis.stop()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.chat.cluster", description="The chat on two servers, one room in Redis."
    )
    parser.add_argument("--redis-port", type=int, default=REDIS_PORT, help=f"default {REDIS_PORT}")
    parser.add_argument("--port", type=int, default=PORT, help=f"gunicorn's (default {PORT})")
    parser.add_argument(
        "--second-port", type=int, default=SECOND_PORT, help=f"takeover serve's (default {SECOND_PORT})"
    )
    parser.add_argument("--workers", type=int, default=WORKERS, help=f"gunicorn's (default {WORKERS})")
    parser.add_argument(
        "--redis-cluster", action="store_true",
        help="a Redis Cluster of 3 masters on --redis-port and the two ports after it, instead of one Redis",
    )
    args = parser.parse_args(argv)
    for signum in (signal.SIGINT, signal.SIGTERM):  # also Ctrl-C where a shell made background jobs ignore it
        signal.signal(signum, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="chat-redis-") as directory, Cluster(
        Path(directory), echo=sys.stdout
    ) as cluster:
        try:
            redis_ports = [args.redis_port + n for n in range(3 if args.redis_cluster else 1)]
            ports = (*redis_ports, args.port, args.second_port)
            if len(set(ports)) < len(ports):
                raise RuntimeError(f"Redis and the two servers need different ports, not {ports}")
            for port in ports:
                check_free(port)
            cluster.start(
                args.redis_port, args.port, args.second_port, workers=args.workers,
                redis_cluster=args.redis_cluster,
            )
            print(
                f"\nOne chat room on {cluster.hub}:\n"
                f"  http://{HOST}:{args.port}/  gunicorn, {args.workers} workers\n"
                f"  http://{HOST}:{args.second_port}/  takeover serve\n"
                "Open both; Ctrl-C stops everything.\n",
                flush=True,
            )
            children = [cluster.redis, *cluster.cluster_nodes, *cluster.servers.values()]
            ended = threading.Event()
            for child in children:
                assert child is not None
                threading.Thread(target=lambda c=child: (c.ended.wait(), ended.set()), daemon=True).start()
            ended.wait()  # until Ctrl-C, or a process ends by itself
            gone = next(child for child in children if child is not None and child.ended.is_set())
            status = gone.process.wait(STOP_TIMEOUT)
            print(f"demo-cluster: {gone.label} exited with {status}: stopping the others", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nstopping", flush=True)
            return 0
        except RuntimeError as error:
            print(f"demo-cluster: {error}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
