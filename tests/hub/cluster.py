"""Server processes running tests/hub/app.py on one Redis, and the clients that drive them."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.paths import ROOT
from tests.processes import OutputLines, free_port, stop_process
from tests.redis_server import HOST

WAIT = 10.0  # seconds any one expected thing may take


@dataclass
class AppServer:
    """``takeover serve`` or gunicorn serving tests/hub/app.py on ``port``."""

    process: subprocess.Popen[bytes]
    port: int
    out: OutputLines = field(init=False)

    def __post_init__(self) -> None:
        self.out = OutputLines(self.process.stdout)

    def get(self, path: str) -> Any:
        return json.loads(self.text(path))

    def text(self, path: str) -> str:
        with urllib.request.urlopen(f"http://{HOST}:{self.port}{path}", timeout=WAIT) as answer:
            return str(answer.read().decode())

    def publish(self, room: str, data: str | bytes) -> dict[str, Any]:
        binary = "&binary=1" if isinstance(data, bytes) else ""
        body = data if isinstance(data, bytes) else data.encode()
        request = urllib.request.Request(
            f"http://{HOST}:{self.port}/publish?room={room}{binary}", data=body, method="POST"
        )
        with urllib.request.urlopen(request, timeout=WAIT) as answer:
            result: dict[str, Any] = json.loads(answer.read())
            return result

    def client(self, room: str, name: str, since: int | None = None) -> HubClient:
        query = f"room={room}&name={name}" + (f"&since={since}" if since is not None else "")
        return HubClient(f"ws://{HOST}:{self.port}/ws?{query}")

    def stop(self) -> None:
        stop_process(self.process, 15)


def _env(hub_url: str, **settings: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, TAKEOVER_HUB=hub_url, PYTHONPATH=path, PYTHONUNBUFFERED="1", **settings)


def _started(command: list[str], env: dict[str, str], port: int, ready: str) -> AppServer:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    server = AppServer(process, port)
    if server.out.wait_for(ready, 30) is None:
        server.stop()
        raise RuntimeError(f"{command[:4]} did not start:\n{server.out.output}")
    return server


def takeover_serve(hub_url: str, **settings: str) -> AppServer:
    port = free_port()
    command = [sys.executable, "-m", "takeover", "serve", "tests.hub.app:app", "--bind", f"{HOST}:{port}"]
    return _started(command, _env(hub_url, **settings), port, "takeover serving")


WORKER_CLASSES = {
    "gthread": ["-k", "gthread", "--threads", "4"],  # the hub in takeover's I/O loop thread of each worker
    "gevent": ["-k", "takeover.gunicorn.Worker"],  # the hub in the worker's (monkey-patched) gevent hub
}


def gunicorn(hub_url: str, workers: int = 2, worker_class: str = "gthread", **settings: str) -> AppServer:
    """gunicorn with ``workers`` workers of ``worker_class`` (a key of :data:`WORKER_CLASSES`)."""
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", *WORKER_CLASSES[worker_class], "-w", str(workers),
        "-b", f"{HOST}:{port}", "--graceful-timeout", "3", "--no-control-socket", "tests.hub.app:app",
    ]
    server = _started(command, _env(hub_url, **settings), port, "Booting worker")
    for _ in range(workers - 1):
        if server.out.wait_for("Booting worker", WAIT) is None:
            break
    return server


class HubClient:
    """A WebSocket client of the app: what the hub replayed, its hello, then live messages."""

    def __init__(self, url: str) -> None:
        self._stack = contextlib.ExitStack()
        # max_queue=None: the client reads all the time, whenever the test looks at what came.
        opened = connect(url, open_timeout=WAIT, max_size=None, max_queue=None)
        self.ws: ClientConnection = self._stack.enter_context(opened)
        ws = self.ws
        self.replayed: list[str | bytes] = []
        while True:
            message = ws.recv(timeout=WAIT)
            hello = _hello(message)
            if hello is not None:
                self.pid: int = hello["pid"]
                self.joined: bool = hello["joined"]
                return
            self.replayed.append(message)

    def receive(self, count: int) -> list[str | bytes]:
        return [self.ws.recv(timeout=WAIT) for _ in range(count)]

    def command(self, **command: Any) -> list[str]:
        self.ws.send(json.dumps(command))
        while True:
            message = self.ws.recv(timeout=WAIT)
            if isinstance(message, str) and message.startswith('{"rooms"'):
                rooms: list[str] = json.loads(message)["rooms"]
                return rooms

    def close(self) -> None:
        self._stack.close()


def _hello(message: str | bytes) -> dict[str, Any] | None:
    if isinstance(message, str) and message.startswith('{"hello"'):
        hello: dict[str, Any] = json.loads(message)["hello"]
        return hello
    return None


def clients_on_every_worker(server: AppServer, room: str, workers: int, prefix: str) -> list[HubClient]:
    """Clients of ``server`` until each of its ``workers`` holds at least one (at most 40 tries)."""
    clients: list[HubClient] = []
    for n in range(40):
        clients.append(server.client(room, f"{prefix}{n}"))
        if len({c.pid for c in clients}) == workers and len(clients) >= workers:
            return clients
    raise AssertionError(f"40 connections reached only workers {sorted({c.pid for c in clients})}")


def eventually(check: Callable[[], Any], timeout: float = WAIT, interval: float = 0.05) -> Any:
    """``check()``'s first truthy result, polled until ``timeout``; AssertionError with the last one."""
    deadline = time.monotonic() + timeout
    result = check()
    while not result and time.monotonic() < deadline:
        time.sleep(interval)  # the state is in other processes: polling it is the only way to see it
        result = check()
    if not result:
        raise AssertionError(f"still {result!r} after {timeout} s")
    return result


def exchange(
    one: AppServer, workers: AppServer, room: str, count: int = 6
) -> tuple[list[HubClient], list[Any]]:
    """Members of ``room`` on ``one`` and on both ``workers``; ``count`` messages published through
    the two servers in turn, each with an offset one more than the one before, and each member got
    them all, in order. Returns the members (open) and the publications."""
    members = [one.client(room, "s"), *clients_on_every_worker(workers, room, 2, "g")]
    results = [(one if n % 2 else workers).publish(room, f"m{n}") for n in range(count)]
    assert all(result["remote"] for result in results), results
    first = results[0]["offset"]
    assert [result["offset"] for result in results] == list(range(first, first + count))
    for member in members:
        assert member.receive(count) == [f"m{n}" for n in range(count)]
    return members, results


@contextlib.contextmanager
def serve_and_gunicorn(
    serve_url: str, gunicorn_url: str, **settings: str
) -> Iterator[tuple[AppServer, AppServer]]:
    """``takeover serve`` on ``serve_url`` and gunicorn gthread (2 workers) on ``gunicorn_url``,
    each healthy; stopped at the end."""
    serve = takeover_serve(serve_url, **settings)
    workers = gunicorn(gunicorn_url, workers=2, **settings)
    try:
        for app in (serve, workers):
            eventually(lambda app=app: app.get("/healthy")["healthy"] or None)  # type: ignore[misc]
        yield serve, workers
    finally:
        serve.stop()
        workers.stop()
