"""Event-style WebSockets on gunicorn's sync and gthread workers: handed over, not holding threads.

Real gunicorn processes serve tests/servers/apps/threaded_app.py. Each check is
one of the servers issue's targets: many WebSockets open at once, for longer
than ``--timeout``, while plain HTTP to the same worker is answered at once;
nothing but the 101 and frames on the wire; one socket's blocking listener
delays no other socket; SIGTERM and a reload close WebSockets with 1001; a
blocking-style session on the sync worker logs one WARNING.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.clients import RawClient, handshake_request
from tests.frames import client_frame
from tests.paths import ROOT
from tests.processes import OutputLines, free_port, stop_process

HOST = "127.0.0.1"
APPS = ROOT / "tests" / "servers" / "apps"
TEXT, CLOSE = 0x1, 0x8
WORKERS = {
    "sync": ["-k", "sync", "--timeout", "10"],
    "gthread": ["-k", "gthread", "--threads", "4"],
}



@dataclass
class Gunicorn:
    """A gunicorn master with one worker serving threaded_app; its output is collected."""

    process: subprocess.Popen[bytes]
    port: int

    def __post_init__(self) -> None:
        self.out = OutputLines(self.process.stdout)

    @property
    def output(self) -> str:
        return self.out.output

    def wait_for_line(self, pattern: str, timeout: float) -> str:
        match = self.out.wait_for(pattern, timeout)
        if match is None:
            raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n{self.output}")
        return match.string

    def stop(self) -> None:
        stop_process(self.process, 15)


def start_gunicorn(worker: str, *extra: str) -> Gunicorn:
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", *WORKERS[worker], "-w", "1", "-b", f"{HOST}:{port}",
        "--graceful-timeout", "5", "--no-control-socket", "--chdir", str(APPS), *extra, "threaded_app:app",
    ]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=path)
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    served = Gunicorn(process, port)
    served.wait_for_line(r"Booting worker", 20)
    deadline = time.monotonic() + 20
    for _ in range(1000):
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return served
        except OSError:
            assert process.poll() is None, served.output
            assert time.monotonic() < deadline, "gunicorn did not listen"
            try:
                process.wait(0.05)
            except subprocess.TimeoutExpired:
                pass
    raise AssertionError("gunicorn did not listen")


@pytest.fixture(params=list(WORKERS))
def gunicorn(request: pytest.FixtureRequest) -> Iterator[Gunicorn]:
    served = start_gunicorn(request.param)
    try:
        yield served
    finally:
        served.stop()


def open_ws(port: int, path: str = "/ws", first: bytes = b"") -> RawClient:
    client = RawClient(port, timeout=10)
    client.send(handshake_request(path) + first)
    status, headers, _ = client.read_response()
    assert status == 101, (status, headers)
    return client


def echo(client: RawClient, text: bytes) -> bytes:
    client.send(client_frame(TEXT, text))
    opcode, fin, payload = client.read_frame()
    assert (opcode, fin) == (TEXT, True)
    return payload


def plain_get(port: int) -> float:
    """Seconds a plain HTTP request to the worker takes to be answered."""
    started = time.monotonic()
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        for _ in range(100):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"plain\n"), data
    return time.monotonic() - started


def test_200_websockets_stay_open_past_the_timeout_while_http_is_answered(gunicorn: Gunicorn) -> None:
    clients = [open_ws(gunicorn.port) for _ in range(200)]
    slowest = 0.0
    deadline = time.monotonic() + 25  # longer than the sync worker's --timeout 10, twice
    for _ in range(100):
        if time.monotonic() >= deadline:
            break
        slowest = max(slowest, plain_get(gunicorn.port))
        time.sleep(1)  # the pace of the HTTP probes, not a synchronisation
    assert slowest < 1.0, f"a plain HTTP request took {slowest:.2f} s"
    for index, client in enumerate(clients):
        assert echo(client, f"still {index}".encode()) == f"still {index}".encode()
    for client in clients:
        client.close()
    assert "WORKER TIMEOUT" not in gunicorn.output
    assert gunicorn.process.poll() is None


def test_only_the_101_and_frames_reach_the_client(gunicorn: Gunicorn) -> None:
    client = RawClient(gunicorn.port, timeout=10)
    # The first frame rides in the handshake's packet: gunicorn had buffered it.
    client.send(handshake_request("/ws") + client_frame(TEXT, b"in the head"))
    head, _, rest = b"", b"", b""
    for _ in range(100):
        if b"\r\n\r\n" in client.buffer:
            break
        client._fill()
    head, _, rest = client.buffer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 101 Switching Protocols"
    names = {line.split(b":", 1)[0].lower() for line in lines[1:]}
    assert names == {b"server", b"date", b"connection", b"upgrade", b"sec-websocket-accept"}, lines
    client.buffer = rest
    assert client.read_frame() == (TEXT, True, b"in the head")
    client.send(client_frame(CLOSE, (1000).to_bytes(2, "big")))
    assert client.read_frame() == (CLOSE, True, (1000).to_bytes(2, "big"))
    assert client.at_eof(), "the connection stayed open after the close handshake"
    assert client.buffer == b"", f"bytes after the close: {client.buffer!r}"


def test_a_blocking_listener_delays_only_its_own_socket(gunicorn: Gunicorn) -> None:
    sleeper, other = open_ws(gunicorn.port), open_ws(gunicorn.port)
    sleeper.send(client_frame(TEXT, b"sleep"))
    started = time.monotonic()
    assert echo(other, b"quick") == b"quick"
    assert time.monotonic() - started < 0.1, "another socket's listener held this one up"
    assert sleeper.read_frame() == (TEXT, True, b"sleep")


@pytest.mark.parametrize("worker", list(WORKERS))
def test_sigterm_closes_handed_over_websockets_with_1001(worker: str) -> None:
    served = start_gunicorn(worker)
    try:
        clients = [open_ws(served.port) for _ in range(3)]
        assert echo(clients[0], b"before") == b"before"
        started = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        for client in clients:
            assert client.read_close() == (1001, "Server shutting down")
        assert time.monotonic() - started < 5, "not within --graceful-timeout"
        served.process.wait(15)
    finally:
        served.stop()


@pytest.mark.parametrize("worker", list(WORKERS))
def test_a_reload_closes_them_with_1001_and_the_new_worker_serves(worker: str) -> None:
    served = start_gunicorn(worker)
    try:
        client = open_ws(served.port)
        assert echo(client, b"before") == b"before"
        served.process.send_signal(signal.SIGHUP)
        assert client.read_close() == (1001, "Server shutting down")
        served.wait_for_line(r"Booting worker", 20)
        fresh = open_ws(served.port)
        assert echo(fresh, b"after") == b"after"
    finally:
        served.stop()


def test_blocking_style_on_the_sync_worker_warns_once() -> None:
    served = start_gunicorn("sync", "--threads", "1")
    try:
        for _ in range(2):
            client = open_ws(served.port, "/blocking")
            assert echo(client, b"blocking") == b"blocking"
            client.send(client_frame(CLOSE, (1000).to_bytes(2, "big")))
            assert client.read_close() == (1000, "")
        served.wait_for_line(r"holds this gunicorn sync worker", 5)
        plain_get(served.port)
        assert served.output.count("holds this gunicorn sync worker") == 1
    finally:
        served.stop()
