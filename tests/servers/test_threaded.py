"""WebSockets on gunicorn's sync and gthread workers: handed over, not holding threads.

Real gunicorn processes serve tests/servers/apps/threaded_app.py. Each check is
one of the servers issue's targets: many WebSockets open at once, for longer
than ``--timeout``, while plain HTTP to the same worker is answered at once;
nothing but the 101 and frames on the wire; one socket's blocking listener
delays no other socket; SIGTERM and a reload close WebSockets with 1001.

Blocking code is handed over too (issue 19 part 4): a Flask-Sock route, a
``handler=`` function and a blocking-style ``receive()`` loop run in a thread
of takeover's, so the request's thread (the sync worker itself) is free at
once; such a handler ends with 1000, or 1011 if it raises; ``handler_threads``
caps them, and an upgrade beyond the cap is answered 503.
"""

from __future__ import annotations

import os
import selectors
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
#: The routes whose WebSockets are handed over and echo: a listener, a Flask-Sock route, a handler.
ECHOES = ["/ws", "/sock", "/handler"]
#: The sync worker's warning of takeover before issue 19 part 4, for blocking code it could not hand over.
HOLDS_THE_WORKER = "holds this gunicorn sync worker"
#: A test of the ``gunicorn`` fixture on the sync worker alone.
ON_SYNC = pytest.mark.parametrize("gunicorn", ["sync"], indirect=True)


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

    def worker_pid(self) -> int:
        """The pid of the master's one worker: its child, as /proc lists it."""
        pid = self.process.pid
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            pids = [int(child) for child in children.read().split()]
        assert len(pids) == 1, f"the master has workers {pids}, not one:\n{self.output}"
        return pids[0]

    def stop(self) -> None:
        stop_process(self.process, 15)


def start_gunicorn(
    worker: str, *extra: str, app: str = "threaded_app:app", env: dict[str, str] | None = None
) -> Gunicorn:
    """One worker of ``worker``'s kind serving ``app`` (from tests/servers/apps or the repository)."""
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", *WORKERS[worker], "-w", "1", "-b", f"{HOST}:{port}",
        "--graceful-timeout", "5", "--no-control-socket", "--chdir", str(APPS), *extra, app,
    ]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, **(env or {}), PYTHONUNBUFFERED="1", PYTHONPATH=path)
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


def try_upgrade(port: int, path: str = "/ws", first: bytes = b"") -> tuple[RawClient, int, bytes]:
    """A client that has sent its handshake (and ``first``), the status it got, and the body."""
    client = RawClient(port, timeout=10)
    client.send(handshake_request(path) + first)
    status, _, body = client.read_response()
    return client, status, body


def open_ws(port: int, path: str = "/ws", first: bytes = b"") -> RawClient:
    client, status, body = try_upgrade(port, path, first)
    assert status == 101, (client.status_line, body)
    return client


def assert_quiet(clients: list[RawClient], seconds: float) -> None:
    """Wait ``seconds`` on the clients' sockets: none may get a byte or an end of stream meanwhile."""
    with selectors.DefaultSelector() as selector:
        for index, client in enumerate(clients):
            selector.register(client.sock, selectors.EVENT_READ, index)
        ready = selector.select(seconds)
        woke = {key.data: clients[key.data].sock.recv(64, socket.MSG_PEEK) for key, _ in ready}
    assert not woke, f"within {seconds} s, clients got (b'' is the end of the stream): {woke}"


def echo(client: RawClient, text: bytes) -> bytes:
    client.send(client_frame(TEXT, text))
    opcode, fin, payload = client.read_frame()
    assert (opcode, fin) == (TEXT, True)
    return payload


def echo_each(clients: list[RawClient], label: str) -> None:
    """Each client sends ``label index`` and reads it back."""
    for index, client in enumerate(clients):
        text = f"{label} {index}".encode()
        assert echo(client, text) == text


def plain_get(port: int, ending: bytes = b"plain\n") -> float:
    """Seconds a plain HTTP request to the worker takes to be answered (a 200 whose body ends so)."""
    started = time.monotonic()
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        for _ in range(100):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(ending), data
    return time.monotonic() - started


@pytest.mark.parametrize(
    ("gunicorn", "path"), [("sync", "/ws"), ("gthread", "/ws"), ("gthread", "/sock")], indirect=["gunicorn"]
)
def test_200_websockets_stay_open_past_the_timeout_while_http_is_answered(
    gunicorn: Gunicorn, path: str
) -> None:
    """200 listeners' or Flask-Sock routes' WebSockets on one worker (a gthread one has 4 threads)."""
    clients = [open_ws(gunicorn.port, path) for _ in range(200)]
    slowest = 0.0
    deadline = time.monotonic() + 25  # longer than the sync worker's --timeout 10, twice
    for _ in range(100):
        if time.monotonic() >= deadline:
            break
        slowest = max(slowest, plain_get(gunicorn.port))
        time.sleep(1)  # the pace of the HTTP probes, not a synchronisation
    assert slowest < 1.0, f"a plain HTTP request took {slowest:.2f} s"
    echo_each(clients, "still")
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


@pytest.mark.parametrize("path", ECHOES)
@pytest.mark.parametrize("worker", list(WORKERS))
def test_sigterm_closes_handed_over_websockets_with_1001(worker: str, path: str) -> None:
    served = start_gunicorn(worker)
    try:
        clients = [open_ws(served.port, path) for _ in range(3)]
        assert echo(clients[0], b"before") == b"before"
        started = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        for client in clients:
            assert client.read_close() == (1001, "Server shutting down")
        assert time.monotonic() - started < 6, "not within --graceful-timeout 5 (and a second for the frames)"
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


@ON_SYNC
def test_flask_sock_routes_stay_open_past_the_sync_workers_timeout(gunicorn: Gunicorn) -> None:
    """Three Flask-Sock routes on one sync worker (--timeout 10), silent for 12 s, then echoing.

    Each route runs in a thread of takeover's, so the worker takes the next
    connection at once and notifies the arbiter: no WORKER TIMEOUT, the same
    worker throughout.
    """
    worker = gunicorn.worker_pid()
    clients = [open_ws(gunicorn.port, "/sock") for _ in range(3)]
    echo_each(clients, "open")
    assert_quiet(clients, 12)  # past --timeout 10: the wait is what this test is about
    echo_each(clients, "still")
    assert "WORKER TIMEOUT" not in gunicorn.output
    assert gunicorn.worker_pid() == worker, gunicorn.output


@ON_SYNC
@pytest.mark.parametrize("path", ["/blocking", "/sock", "/handler"])
def test_blocking_code_leaves_the_sync_worker_free(gunicorn: Gunicorn, path: str) -> None:
    """Three WebSockets whose messages blocking code reads on one sync worker: plain HTTP is answered.

    ``/blocking`` is a ``receive()`` loop in a thread the app starts (no
    message listener), ``/sock`` a Flask-Sock route, ``/handler`` a
    ``handler=`` function: each is handed over, and nothing warns that it
    holds the worker.
    """
    clients = [open_ws(gunicorn.port, path) for _ in range(3)]
    echo_each(clients, "open")
    assert plain_get(gunicorn.port) < 1.0
    echo_each(clients, "still")
    assert HOLDS_THE_WORKER not in gunicorn.output


@ON_SYNC
def test_a_handler_that_returns_closes_with_1000(gunicorn: Gunicorn) -> None:
    client = open_ws(gunicorn.port, "/handler-once")
    assert echo(client, b"only one") == b"only one"
    assert client.read_close()[0] == 1000


@ON_SYNC
def test_a_handler_that_raises_is_logged_and_closes_with_1011(gunicorn: Gunicorn) -> None:
    client = open_ws(gunicorn.port, "/handler-raises")
    client.send(client_frame(TEXT, b"boom"))
    assert client.read_close()[0] == 1011
    logged = gunicorn.out.wait_output(lambda output: "fails on purpose" in output, 5)
    assert logged, f"the handler's exception was not logged:\n{gunicorn.output}"


@pytest.mark.parametrize("path", ["/sock", "/handler"])
def test_beyond_handler_threads_an_upgrade_is_answered_503(path: str) -> None:
    """``handler_threads`` 2 (SOCK_SERVER_OPTIONS, or the keyword): a third handler waits for a slot."""
    served = start_gunicorn("sync", env={"THREADED_APP_HANDLER_THREADS": "2"})
    try:
        first, second = open_ws(served.port, path), open_ws(served.port, path)
        assert (echo(first, b"1"), echo(second, b"2")) == (b"1", b"2")
        third, status, body = try_upgrade(served.port, path)
        third.close()
        assert (status, b"handler_threads" in body) == (503, True), (third.status_line, body)
        first.send(client_frame(CLOSE, (1000).to_bytes(2, "big")))
        assert first.read_close() == (1000, "")
        # The slot is free when the handler's thread ends, just after the close handshake; nothing
        # on the wire says when: retry for up to 5 s.
        statuses = []
        deadline = time.monotonic() + 5
        for _ in range(50):
            fresh, status, body = try_upgrade(served.port, path)
            statuses.append(status)
            if status == 101 or time.monotonic() > deadline:
                break
            fresh.close()
            time.sleep(0.1)  # the pace of the retries, not a synchronisation
        assert statuses[-1] == 101 and set(statuses) <= {101, 503}, (statuses, body)
        assert (echo(fresh, b"fresh"), echo(second, b"second")) == (b"fresh", b"second")
    finally:
        served.stop()
