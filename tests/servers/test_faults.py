"""Fault injection over real sockets on 127.0.0.1 (the reliability issue's "Faults").

Clients that vanish mid-handshake, mid-frame and mid-close; a silent peer and a
real half-open connection (a network namespace where the client's address is
blackholed); listeners that raise or block; ``server.close()`` with thousands of
WebSockets open; SIGTERM to ``examples/echo.py`` during traffic. For each: the
server keeps serving a well-behaved client (a real echo round-trip), every
socket is closed (file descriptors come back, the WebSocket's socket is
closed), ``close`` fires exactly once and ``error`` at most once (where a
browser would fire it), and nothing is printed as an unhandled traceback.

Most run takeover's ``Server`` in this process under gevent, with raw clients
on gevent sockets, so the server-side events can be observed. Waits are on
events or bounded polling loops, never bare sleeps.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.event
import gevent.pool
import gevent.queue
import gevent.socket
import pytest
from werkzeug.wrappers import Request

from takeover import WebSocket, create_server, upgrade_websocket
from takeover.server import SHUTDOWN_REASON, Server
from takeover.websocket import IDLE_TIMEOUT_REASON
from tests.clients import RawClient, handshake_request
from tests.frames import client_frame
from tests.paths import EXAMPLES, ROOT
from tests.processes import start_server

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
LISTENER_FAILED = "Exception in a WebSocket %r listener"


# -- observing the server side ------------------------------------------------


class Recorder:
    """Every event of one server-side WebSocket, attached right after the upgrade."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.events: list[Any] = []
        self.closed = gevent.event.Event()
        for kind in ("open", "message", "error", "close"):
            ws.add_event_listener(kind, self.record)

    def record(self, event: Any) -> None:
        self.events.append(event)
        if event.type == "close":
            self.closed.set()

    def types(self) -> list[str]:
        return [event.type for event in self.events]

    @property
    def close(self) -> Any:
        closes = [event for event in self.events if event.type == "close"]
        assert len(closes) == 1, self.events
        return closes[0]

    def wait_closed(self, timeout: float = 5) -> Any:
        assert self.closed.wait(timeout), f"no close event within {timeout} s: {self.events}"
        assert self.ws.ready_state == WebSocket.CLOSED
        return self.close

    def assert_socket_closed(self) -> None:
        assert self.ws.session.transport.sock.fileno() == -1, "the WebSocket's socket is still open"


def open_fds() -> int:
    """This process's open file descriptors (both ends of each connection are in it).

    Compared with ``<=``: earlier tests' leftovers may be freed meanwhile, never
    added, so a leak still shows.
    """
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def open_sockets() -> set[str]:
    """This process's open sockets, by inode (``socket:[N]``, as /proc/self/fd shows them)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:"):
            found.add(target)
    return found


def wait_for(predicate: Callable[[], bool], timeout: float = 5, what: str = "condition") -> None:
    """Poll ``predicate`` (bounded in time and count), letting other greenlets run in between."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.01) + 1):
        if predicate():
            return
        if time.monotonic() > deadline:
            break
        gevent.sleep(0.01)
    assert predicate(), f"timed out waiting for {what}"


class Harness:
    """An in-process server whose ``upgrade`` listener echoes and records each WebSocket."""

    def __init__(self, **server_options: Any) -> None:
        self.server: Server = create_server(**server_options)
        self.options: dict[str, Any] = {}
        self.upgrades = 0
        self.recorders: gevent.queue.Queue[Recorder] = gevent.queue.Queue()
        #: Called with each new WebSocket before the echo listener is added.
        self.before_echo: Callable[[WebSocket], None] | None = None
        self.clients: list[RawClient] = []
        #: The server's end of each accepted connection.
        self.connections: list[Any] = []
        self.server.on("connection", self.connections.append)
        self.server.on("upgrade", self.on_upgrade)
        self.server.listen(0)
        self.port = self.server.address[1]

    def on_upgrade(self, request: Request, sock: Any, head: bytes) -> None:
        self.upgrades += 1
        ws, _ = upgrade_websocket(request, socket=sock, head=head, **self.options)
        recorder = Recorder(ws)
        if self.before_echo is not None:
            self.before_echo(ws)
        ws.add_event_listener("message", lambda event: ws.send(event.data))
        self.recorders.put(recorder)

    def client(self, timeout: float = 10) -> RawClient:
        client = RawClient(self.port, timeout=timeout, connect=gevent.socket.create_connection)
        self.clients.append(client)
        return client

    def open(self, path: str = "/") -> tuple[RawClient, Recorder]:
        """A client past the handshake, and the server's recorder for it."""
        client = self.client()
        client.send(handshake_request(path))
        assert client.read_response()[0] == 101
        return client, self.next_recorder()

    def next_recorder(self, timeout: float = 5) -> Recorder:
        recorder: Recorder = self.recorders.get(timeout=timeout)
        return recorder

    def assert_serves(self) -> None:
        """A well-behaved client: handshake, echo round-trip, clean close; its socket is freed."""
        client, recorder = self.open("/well-behaved")
        client.send(client_frame(TEXT, b"still serving"))
        assert client.read_frame() == (TEXT, True, b"still serving")
        client.send(client_frame(CLOSE, (1000).to_bytes(2, "big")))
        assert client.read_close() == (1000, "")
        assert client.at_eof()
        client.close()
        close = recorder.wait_closed()
        assert (close.code, close.was_clean) == (1000, True)
        assert recorder.types() == ["open", "message", "close"]
        recorder.assert_socket_closed()

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.server.close(timeout=1)


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    h.assert_serves()  # warm up: gevent's resolver and hub have made their descriptors
    yield h
    h.close()


@pytest.fixture(autouse=True)
def no_unhandled_tracebacks(capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    """gevent's hub prints an unhandled greenlet error to stderr: there must be none."""
    yield
    err = capfd.readouterr().err
    assert "Traceback" not in err, err


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """takeover's ERROR records so far (``caplog`` captures INFO and up for the takeover logger)."""
    return [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("takeover")]


def set_linger_reset(client: RawClient) -> None:
    """Make ``close()`` send a TCP reset instead of a FIN."""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# -- clients that vanish ------------------------------------------------------


class TestVanishingClients:
    @pytest.mark.parametrize(
        "partial",
        [b"GE", b"GET / HTTP/1.1\r\n", handshake_request()[:60], handshake_request()[:-2]],
        ids=["request-line-start", "request-line", "mid-headers", "no-blank-line"],
    )
    @pytest.mark.parametrize("how", ["fin", "reset"])
    def test_half_a_handshake_then_gone(self, harness: Harness, partial: bytes, how: str) -> None:
        """No upgrade happens for an incomplete request, and its answer (if any) meets a closed socket."""
        baseline = open_fds()
        accepted = len(harness.connections)
        client = harness.client()
        client.send(partial)
        wait_for(lambda: len(harness.connections) > accepted, what="the server to accept")
        server_end = harness.connections[accepted]
        if how == "reset":
            set_linger_reset(client)
        client.close()
        wait_for(lambda: server_end.fileno() == -1, what="the server to close its end")
        assert harness.upgrades == 1  # only the warm-up client's
        harness.assert_serves()
        wait_for(lambda: open_fds() <= baseline, what="descriptors to come back")

    @pytest.mark.parametrize("how", ["fin", "reset"])
    def test_a_whole_handshake_then_gone_before_reading_the_101(self, harness: Harness, how: str) -> None:
        baseline = open_fds()
        client = harness.client()
        client.send(handshake_request())
        if how == "reset":
            # Wait until the request was read (the upgrade listener ran): a reset
            # arriving first would discard it in the kernel, and no WebSocket would exist.
            recorder = harness.next_recorder()
            set_linger_reset(client)
            client.close()
        else:
            client.close()  # the FIN follows the request: the server reads both
            recorder = harness.next_recorder()
        close = recorder.wait_closed()
        assert (close.code, close.was_clean) == (1006, False)
        assert recorder.types() == ["open", "error", "close"]
        recorder.assert_socket_closed()
        harness.assert_serves()
        wait_for(lambda: open_fds() <= baseline, what="descriptors to come back")
        assert recorder.types() == ["open", "error", "close"]  # no second dispatch since

    @pytest.mark.parametrize(
        "cut",
        [
            lambda frame: frame[:1],  # the first header byte
            lambda frame: frame[:4],  # the header, without the masking key
            lambda frame: frame[:8],  # header and masking key
            lambda frame: frame[: len(frame) // 2],  # half the payload
            lambda frame: frame[:-1],  # all but the last byte
        ],
        ids=["one-byte", "header", "header-and-mask", "half-payload", "last-byte-missing"],
    )
    @pytest.mark.parametrize("how", ["fin", "reset"])
    def test_gone_in_the_middle_of_a_frame(
        self, harness: Harness, cut: Callable[[bytes], bytes], how: str
    ) -> None:
        baseline = open_fds()
        client, recorder = harness.open()
        client.send(client_frame(TEXT, b"first, whole"))
        assert client.read_frame() == (TEXT, True, b"first, whole")
        client.send(cut(client_frame(BINARY, b"y" * 1000)))
        if how == "reset":
            set_linger_reset(client)
        client.close()
        close = recorder.wait_closed()
        assert (close.code, close.reason, close.was_clean) == (1006, "", False)
        assert recorder.types() == ["open", "message", "error", "close"]
        recorder.assert_socket_closed()
        harness.assert_serves()
        wait_for(lambda: open_fds() <= baseline, what="descriptors to come back")

    def test_a_close_frame_then_gone_without_waiting(self, harness: Harness) -> None:
        baseline = open_fds()
        client, recorder = harness.open()
        client.send(client_frame(CLOSE, (4001).to_bytes(2, "big") + b"bye"))
        client.close()
        # The server received the close and answered it: the handshake is complete on
        # its side (its answer meets a closed socket, which is the peer's business).
        close = recorder.wait_closed()
        assert (close.code, close.reason, close.was_clean) == (4001, "bye", True)
        assert recorder.types() == ["open", "close"]
        recorder.assert_socket_closed()
        harness.assert_serves()
        wait_for(lambda: open_fds() <= baseline, what="descriptors to come back")

    @pytest.mark.parametrize("how", ["fin", "reset"])
    def test_gone_after_the_server_sent_its_close(self, harness: Harness, how: str) -> None:
        baseline = open_fds()
        client, recorder = harness.open()
        recorder.ws.close(4002, "server bye")
        assert client.read_close() == (4002, "server bye")
        if how == "reset":
            set_linger_reset(client)
        client.close()  # without answering
        close = recorder.wait_closed()
        # docs/semantics.rst: close(), then the client hung up without answering: 1006, no error.
        assert (close.code, close.was_clean) == (1006, False)
        assert recorder.types() == ["open", "close"]
        recorder.assert_socket_closed()
        harness.assert_serves()
        wait_for(lambda: open_fds() <= baseline, what="descriptors to come back")

    def test_gone_while_its_close_is_unanswered_and_many_others_vanish(self, harness: Harness) -> None:
        """Fifty clients vanish at once in assorted ways; each is closed once, the rest go on."""
        baseline = open_fds()
        opened = [harness.open() for _ in range(50)]
        for index, (client, recorder) in enumerate(opened):
            kind = index % 5
            if kind == 0:
                client.send(client_frame(TEXT, b"x" * 500)[:100])
            elif kind == 1:
                client.send(client_frame(CLOSE, (1000).to_bytes(2, "big")))
            elif kind == 2:
                recorder.ws.close(1000)
            elif kind == 3:
                set_linger_reset(client)
            client.close()
        for _, recorder in opened:
            recorder.wait_closed()
            recorder.assert_socket_closed()
        harness.assert_serves()
        wait_for(lambda: open_fds() <= baseline, what="descriptors to come back")
        for index, (_, recorder) in enumerate(opened):
            types = recorder.types()
            assert types.count("close") == 1 and types.count("error") <= 1, (index, types)
            assert types[-1] == "close"


# -- a peer that stops responding -------------------------------------------


class TestHalfOpen:
    def test_a_silent_peer_is_closed_with_1001_after_the_idle_timeout(self, harness: Harness) -> None:
        """A client that completes the handshake, then never reads nor writes (not even pongs)."""
        baseline = open_fds()
        idle = 0.4
        harness.options = {"idle_timeout": idle}
        silent, recorder = harness.open()
        opened = time.monotonic()
        harness.assert_serves()  # another client is served while the silent one waits
        close = recorder.wait_closed(idle + 5)
        elapsed = time.monotonic() - opened
        assert idle * 0.9 <= elapsed <= idle + 1.5, elapsed
        assert (close.code, close.reason, close.was_clean) == (1001, IDLE_TIMEOUT_REASON, False)
        assert recorder.types() == ["open", "error", "close"]
        recorder.assert_socket_closed()
        # What the silent client would have read: a ping, then the close frame, then EOF.
        assert silent.read_frame()[0] == PING
        assert silent.read_close() == (1001, IDLE_TIMEOUT_REASON)
        assert silent.at_eof()
        silent.close()
        wait_for(lambda: open_fds() <= baseline, what="descriptors to come back")

    def test_a_real_half_open_connection_is_closed_by_the_idle_timeout(self) -> None:
        """The client's address is blackholed in a network namespace: nothing reaches it, not
        even the server's ping, and no ACK, FIN or reset comes back, as when a peer's host or
        network vanishes. The server is in-process in the namespace (``unshare -rn``)."""
        unshare = shutil.which("unshare")
        ip = shutil.which("ip") or next(
            (p for p in ("/usr/sbin/ip", "/sbin/ip") if os.path.exists(p)), None
        )
        if unshare is None or ip is None:
            pytest.skip("needs unshare(1) and ip(8) for a network namespace")
        probe = subprocess.run(
            [unshare, "-rn", ip, "route", "add", "blackhole", "127.0.0.2/32", "table", "local"],
            capture_output=True,
        )
        if probe.returncode != 0:
            pytest.skip(f"no unprivileged network namespace here: {probe.stderr.decode().strip()}")
        env = dict(os.environ, PYTHONPATH=str(ROOT), TAKEOVER_IP=ip)
        run = subprocess.run(
            [unshare, "-rn", sys.executable, "-c", HALF_OPEN_SCENARIO],
            capture_output=True,
            timeout=60,
            cwd=ROOT,
            env=env,
        )
        assert run.returncode == 0, run.stderr.decode()
        assert b"Traceback" not in run.stderr, run.stderr.decode()
        result = json.loads(run.stdout.decode().strip().splitlines()[-1])
        assert result["client_received"] == "nothing"  # a genuine half-open: the ping never arrived
        assert result["echo_meanwhile"] == "still serving"
        assert result["types"] == ["open", "error", "close"]
        assert result["close"] == [1001, IDLE_TIMEOUT_REASON, False]
        assert result["idle"] * 0.9 <= result["elapsed"] <= result["idle"] + 1.5, result
        assert result["fileno"] == -1
        assert result["fds_back"] is True


# Runs in its own network namespace, where it may change the routes.
HALF_OPEN_SCENARIO = textwrap.dedent(
    """
    import json, os, subprocess, time
    import gevent, gevent.socket
    from tests.clients import RawClient, handshake_request
    from tests.frames import client_frame
    from tests.servers.test_faults import Harness, open_fds, wait_for

    ip = os.environ["TAKEOVER_IP"]
    subprocess.run([ip, "link", "set", "lo", "up"], check=True)
    harness = Harness()
    harness.assert_serves()
    baseline = open_fds()
    idle = 0.6
    harness.options = {"idle_timeout": idle}
    sock = gevent.socket.socket()
    sock.bind(("127.0.0.2", 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", harness.port))
    client = RawClient(harness.port, connect=lambda *args, **kwargs: sock)
    client.send(handshake_request())
    assert client.read_response()[0] == 101
    recorder = harness.next_recorder()
    opened = time.monotonic()
    # From now on nothing the server sends reaches 127.0.0.2.
    subprocess.run([ip, "route", "add", "blackhole", "127.0.0.2/32", "table", "local"], check=True)
    echo = harness.client()
    echo.send(handshake_request() + client_frame(0x1, b"still serving"))
    assert echo.read_response()[0] == 101
    echo_meanwhile = echo.read_frame()[2].decode()
    assert recorder.closed.wait(idle + 10)
    elapsed = time.monotonic() - opened
    sock.setblocking(False)
    try:
        received = repr(sock.recv(100))
    except BlockingIOError:
        received = "nothing"
    echo.close()
    sock.close()
    harness.next_recorder().wait_closed()
    try:
        wait_for(lambda: open_fds() <= baseline)
        fds_back = True
    except AssertionError:
        fds_back = False
    close = recorder.close
    print(json.dumps({
        "client_received": received,
        "echo_meanwhile": echo_meanwhile,
        "types": recorder.types(),
        "close": [close.code, close.reason, close.was_clean],
        "idle": idle,
        "elapsed": elapsed,
        "fileno": recorder.ws.session.transport.sock.fileno(),
        "fds_back": fds_back,
    }))
    harness.close()
    """
)


# -- listeners that raise or block ---------------------------------------------


class TestListeners:
    @pytest.mark.parametrize("kind", ["open", "message", "error", "close"])
    def test_a_listener_that_raises_is_logged_and_changes_nothing_else(
        self, harness: Harness, kind: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Logged once per call by takeover, at ERROR with its traceback; never reaches the hub."""
        caplog.set_level(logging.INFO, logger="takeover")

        class ListenerBug(Exception):
            pass

        def broken(event: Any) -> None:
            raise ListenerBug(kind)

        # Added before the echo listener, so the echo runs after it on each message.
        harness.before_echo = lambda ws: ws.add_event_listener(kind, broken)
        baseline = open_fds()
        client, recorder = harness.open()
        harness.before_echo = None
        for text in (b"one", b"two"):
            client.send(client_frame(TEXT, text))
            assert client.read_frame() == (TEXT, True, text)
        harness.assert_serves()  # another client, meanwhile
        if kind == "error":
            client.close()  # vanish: error, then close
            close = recorder.wait_closed()
            assert close.code == 1006
            assert recorder.types() == ["open", "message", "message", "error", "close"]
        else:
            client.send(client_frame(CLOSE, (1000).to_bytes(2, "big")))
            assert client.read_close() == (1000, "")
            assert client.at_eof()
            close = recorder.wait_closed()
            assert (close.code, close.was_clean) == (1000, True)
            assert recorder.types() == ["open", "message", "message", "close"]
        recorder.assert_socket_closed()
        client.close()
        wait_for(lambda: open_fds() <= baseline, what="descriptors to come back")
        calls = {"open": 1, "message": 2, "error": 1, "close": 1}[kind]
        errors = errors_logged(caplog)
        assert [r.getMessage() for r in errors] == [LISTENER_FAILED % kind] * calls
        assert all(r.exc_info and isinstance(r.exc_info[1], ListenerBug) for r in errors)

    def test_a_message_listener_that_blocks_blocks_only_its_own_connection(self, harness: Harness) -> None:
        release = gevent.event.Event()
        blocked = gevent.event.Event()

        def blocking(event: Any) -> None:
            if event.data == "block":
                blocked.set()
                release.wait(10)

        harness.before_echo = lambda ws: ws.add_event_listener("message", blocking)
        client, recorder = harness.open()
        harness.before_echo = None
        client.send(client_frame(TEXT, b"block") + client_frame(TEXT, b"queued behind it"))
        assert blocked.wait(5)
        started = time.monotonic()
        for _ in range(3):
            harness.assert_serves()  # other clients do full sessions while it is blocked
        assert time.monotonic() - started < 5
        # Still inside the first message's listeners: the second is not dispatched yet.
        assert recorder.types() == ["open", "message"]
        release.set()
        assert client.read_frame() == (TEXT, True, b"block")
        assert client.read_frame() == (TEXT, True, b"queued behind it")
        client.send(client_frame(CLOSE, (1000).to_bytes(2, "big")))
        assert client.read_close() == (1000, "")
        assert recorder.wait_closed().code == 1000
        assert recorder.types() == ["open", "message", "message", "close"]

    def test_an_upgrade_listener_that_blocks_delays_only_its_own_handshake(self, harness: Harness) -> None:
        release = gevent.event.Event()
        entered = gevent.event.Event()
        echo_upgrade = harness.on_upgrade

        def slow_upgrade(request: Request, sock: Any, head: bytes) -> None:
            if request.path == "/slow":
                entered.set()
                release.wait(10)
            echo_upgrade(request, sock, head)

        harness.server.off("upgrade", echo_upgrade)
        harness.server.on("upgrade", slow_upgrade)
        slow = harness.client()
        slow.send(handshake_request("/slow"))
        assert entered.wait(5)
        harness.assert_serves()
        release.set()
        assert slow.read_response()[0] == 101
        slow.send(client_frame(TEXT, b"late but fine"))
        assert slow.read_frame() == (TEXT, True, b"late but fine")


# -- the server closed with thousands of sockets open ---------------------------


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} file descriptors; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@pytest.fixture
def fd_limit() -> Iterator[Callable[[int], None]]:
    saved = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield raise_fd_limit
    resource.setrlimit(resource.RLIMIT_NOFILE, saved)


def open_many(harness: Harness, count: int, batch: int = 200) -> list[tuple[RawClient, Recorder]]:
    """``count`` clients past the handshake, at most ``batch`` at a time (the listen backlog is finite)."""
    opened: list[tuple[RawClient, Recorder]] = []
    pool = gevent.pool.Pool(batch)
    clients = pool.map(lambda _: handshaken(harness), range(count))
    recorders = [harness.next_recorder() for _ in range(count)]
    by_port = {r.ws.remote_address[1]: r for r in recorders}
    for client in clients:
        opened.append((client, by_port[client.sock.getsockname()[1]]))
    return opened


def handshaken(harness: Harness) -> RawClient:
    client = harness.client(timeout=20)
    client.send(handshake_request())
    assert client.read_response()[0] == 101
    return client


class TestServerClose:
    def test_close_with_two_thousand_websockets_open(self, fd_limit: Callable[[int], None]) -> None:
        count = 2000
        fd_limit(open_fds() + 2 * count + 200)  # both ends are in this process
        harness = Harness()
        try:
            harness.assert_serves()
            baseline = open_fds()
            sockets_before = open_sockets()
            opened = open_many(harness, count)
            # Both ends of each, counted by socket (a descriptor an earlier test left to a thread
            # may close meanwhile: the total can drop by one, the new sockets cannot).
            assert len(open_sockets() - sockets_before) >= 2 * count
            answers: list[tuple[int | None, str]] = []

            def answer(client: RawClient) -> None:
                # A well-behaved client: read the close, answer it, wait for the server's FIN.
                answers.append(client.read_close())
                client.send(client_frame(CLOSE, (1001).to_bytes(2, "big")))
                assert client.at_eof(10)
                client.close()

            readers = gevent.pool.Group()
            for client, _ in opened:
                readers.spawn(answer, client)
            started = time.monotonic()
            harness.server.close(timeout=10)
            took = time.monotonic() - started
            assert took < 8, f"close() took {took:.1f} s"
            readers.join(timeout=20, raise_error=True)
            assert answers == [(1001, SHUTDOWN_REASON)] * count
            for _, recorder in opened:
                close = recorder.wait_closed(0)  # close() waited for every handshake
                assert (close.code, close.was_clean) == (1001, True)
                assert recorder.types() == ["open", "close"]
                recorder.assert_socket_closed()
            wait_for(lambda: open_fds() <= baseline, what="descriptors to come back")
            assert harness.server.connection_count == 0
        finally:
            harness.close()

    def test_close_when_clients_never_answer(self) -> None:
        """close(timeout) returns after its timeout; each WebSocket ends after its close_timeout."""
        harness = Harness()
        try:
            harness.assert_serves()
            baseline = open_fds()
            harness.options = {"close_timeout": 0.5}
            opened = open_many(harness, 200)
            started = time.monotonic()
            harness.server.close(timeout=0.3)
            assert time.monotonic() - started < 2
            for client, _ in opened:
                assert client.read_close() == (1001, SHUTDOWN_REASON)
            for client, recorder in opened:
                close = recorder.wait_closed(5)
                assert (close.code, close.was_clean) == (1006, False)
                assert recorder.types() == ["open", "close"]
                recorder.assert_socket_closed()
                assert client.at_eof()
                client.close()
            assert time.monotonic() - started < 5
            wait_for(lambda: open_fds() <= baseline, what="descriptors to come back")
        finally:
            harness.close()

    def test_an_upgrade_that_races_with_close_is_closed_with_1001(self) -> None:
        """A handshake in progress when close() starts: its WebSocket must not stay open."""
        harness = Harness()
        release = gevent.event.Event()
        entered = gevent.event.Event()
        echo_upgrade = harness.on_upgrade

        def slow_upgrade(request: Request, sock: Any, head: bytes) -> None:
            entered.set()
            release.wait(10)
            echo_upgrade(request, sock, head)

        harness.server.off("upgrade", echo_upgrade)
        harness.server.on("upgrade", slow_upgrade)
        try:
            client = harness.client()
            client.send(handshake_request())
            assert entered.wait(5)
            closing = gevent.spawn(harness.server.close, 5)
            wait_for(lambda: not harness.server.listening, what="close() to start")
            release.set()
            assert client.read_response()[0] == 101
            assert client.read_close() == (1001, SHUTDOWN_REASON)
            client.send(client_frame(CLOSE, (1001).to_bytes(2, "big")))
            assert client.at_eof()
            recorder = harness.next_recorder()
            assert recorder.wait_closed().code == 1001
            closing.get(timeout=10)
        finally:
            release.set()
            harness.close()


# -- SIGTERM during traffic ---------------------------------------------------


class EchoLoop(threading.Thread):
    """A blocking client echoing messages until the server closes; records how it ended."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.client = RawClient(port)
        self.client.send(handshake_request())
        assert self.client.read_response()[0] == 101
        self.round_trips = 0
        self.busy = threading.Event()  # set after 20 round-trips
        self.close: tuple[int | None, str] | None = None
        self.at_eof = False
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for index in range(1_000_000):
                payload = b"message %d" % index
                self.client.send(client_frame(TEXT, payload))
                opcode, _, data = self.client.read_frame()
                if opcode == CLOSE:
                    self.close = (int.from_bytes(data[:2], "big"), data[2:].decode())
                    self.client.send(client_frame(CLOSE, data[:2]))
                    self.at_eof = self.client.at_eof(10)
                    return
                assert (opcode, data) == (TEXT, payload)
                self.round_trips += 1
                if self.round_trips == 20:
                    self.busy.set()
        except BaseException as error:
            self.error = error
        finally:
            self.busy.set()
            self.client.close()


def test_sigterm_during_traffic_closes_every_client_with_1001_and_exits_0() -> None:
    """examples/echo.py turns SIGTERM into server.close(): 1001 to each, then exit 0."""
    server = start_server(EXAMPLES / "echo.py")  # stdout and stderr, merged
    process = server.process
    try:
        loops = [EchoLoop(server.port) for _ in range(8)]
        for loop in loops:
            loop.start()
        for loop in loops:
            assert loop.busy.wait(10)
        assert all(loop.error is None for loop in loops), [loop.error for loop in loops]
        sent_at = time.monotonic()
        process.send_signal(signal.SIGTERM)  # while every client is in its echo loop
        for loop in loops:
            loop.join(10)
            assert not loop.is_alive()
        assert process.wait(5) == 0
        assert time.monotonic() - sent_at < 5
        for loop in loops:
            assert loop.error is None, loop.error
            assert loop.close == (1001, SHUTDOWN_REASON)
            assert loop.at_eof
            assert loop.round_trips >= 20
    finally:
        server.stop()
    assert process.stdout is not None
    output = process.stdout.read()  # the process has exited: this ends
    assert b"Traceback" not in output, output.decode(errors="replace")
