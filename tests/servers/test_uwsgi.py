"""uWSGI's deployments as real processes: the wire, the head bytes, shutdown, threads that are not held.

The app is tests/servers/apps/uwsgi_app.py: ``/ws`` echoes event-style (handed
over: the request returns), ``/blocking`` echoes with ``for message in ws``
(in place: it holds the request's thread). The echo suite of test_servers.py
runs on uWSGI too; this file checks what is uWSGI's own:

* exactly the 101 and then frames on the wire, nothing of uWSGI's after them;
* frames sent in the handshake's packet (some in uWSGI's buffer, the rest in
  the socket) are all echoed, in order;
* SIGINT and SIGTERM (``--die-on-term``) stop uWSGI after its workers closed
  their WebSockets with 1001, and SIGHUP (a graceful reload) closes them too;
* with ``--threads 2`` (or ``--gevent 2``, or two single-threaded processes)
  five open event-style WebSockets leave plain requests answered at once;
  blocking ones hold a thread each (under ``--gevent``, no core).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clients import RawClient, handshake_request
from tests.frames import client_frame
from tests.servers.test_servers import (
    ACCEPT,
    CLOSE_1000,
    HOST,
    Served,
    expect_switch,
    read_to_eof,
    start_uwsgi,
    start_uwsgi_nginx,
)

APP = "tests.servers.apps.uwsgi_app:app"
#: What takeover's headers make of the 101 when uWSGI writes them as given (--http-socket).
EXACT_101 = (
    "HTTP/1.1 101 Switching Protocols\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    f"Sec-WebSocket-Accept: {ACCEPT}\r\n"
    "\r\n"
).encode()
#: What nginx writes of it: its own Server and Date, ``Connection: upgrade``.
NGINX_101_HEADERS = {"connection": "upgrade", "upgrade": "websocket", "sec-websocket-accept": ACCEPT}
PLAIN = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"

DEPLOYMENTS = {
    "http-threads": ("--http-socket", "--master", "--threads", "8"),
    "http-processes": ("--http-socket", "--master", "--processes", "2"),
    "http11-threads": ("--http11-socket", "--master", "--threads", "8"),
    "gevent": ("--http-socket", "--master", "--gevent", "100"),
    "nginx": ("--socket", "--master", "--threads", "8"),
}


def start(name: str, tmp: Path, *more: str) -> Served:
    """The deployment ``name`` of DEPLOYMENTS serving uwsgi_app, with ``more`` options."""
    socket_option, *options = DEPLOYMENTS[name]
    if socket_option == "--socket":
        return start_uwsgi_nginx(tmp, *options, *more, module=APP)
    return start_uwsgi(*options, *more, socket_option=socket_option, module=APP)


@pytest.fixture(scope="module", params=list(DEPLOYMENTS))
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = start(request.param, tmp_path_factory.mktemp(request.param))
    try:
        yield served
        alive = served.process.poll() is None
    finally:
        served.stop()
    assert alive, f"uWSGI died:\n{served.output}"


def read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError(f"EOF after {data!r}")
        data += chunk
    return data


def read_head(sock: socket.socket) -> bytes:
    """The response head, read a byte at a time so nothing after it is consumed."""
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError(f"EOF in the response head: {data!r}")
        data += chunk
    return data


def header_fields(head: bytes) -> tuple[str, dict[str, str]]:
    status, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    fields = {}
    for line in lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return status, fields


def upgraded(served: Served, path: str = "/ws") -> RawClient:
    client = RawClient(served.port, HOST, timeout=10)
    client.send(handshake_request(path))
    expect_switch(client)
    return client


def assert_echoes(client: RawClient, payload: bytes) -> None:
    client.send(client_frame(0x1, payload))
    assert client.read_frame() == (0x1, True, payload)


def worker_pids(served: Served) -> set[int]:
    return {int(pid) for pid in re.findall(r"spawned uWSGI worker \d+ \(pid: (\d+)", served.output)}


def atexit_pids(output: str) -> set[int]:
    """The processes where uwsgi_app's own ``uwsgi.atexit`` hook ran."""
    return {int(pid) for pid in re.findall(r"app atexit pid=(\d+)", output)}


# -- the wire ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ws", "/blocking"], ids=["handed-over", "in-place"])
def test_the_101_then_frames_then_eof_and_nothing_else(deployment: Served, path: str) -> None:
    """Every byte the client reads: the 101, the echo, the close; no HTTP of uWSGI's after them."""
    with socket.create_connection((HOST, deployment.port), timeout=10) as sock:
        sock.sendall(handshake_request(path))
        head = read_head(sock)
        if deployment.fronts:
            # nginx writes its own 101 from uWSGI's (its Server and Date, Connection
            # in lower case): the headers that make the handshake must be there.
            status, fields = header_fields(head)
            assert status == "HTTP/1.1 101 Switching Protocols", head
            assert {name: fields.get(name) for name in NGINX_101_HEADERS} == NGINX_101_HEADERS, head
            assert set(fields) == {*NGINX_101_HEADERS, "server", "date"}, head
        else:
            assert head == EXACT_101
        sock.sendall(client_frame(0x1, b"one"))
        assert read_exactly(sock, 5) == b"\x81\x03one"
        sock.sendall(client_frame(0x2, b"two"))
        assert read_exactly(sock, 5) == b"\x82\x03two"
        sock.sendall(client_frame(0x8, (1000).to_bytes(2, "big")))
        rest = b""
        sock.settimeout(5)
        while chunk := sock.recv(65536):  # ends at EOF (a timeout fails the test)
            rest += chunk
    assert rest == CLOSE_1000


@pytest.mark.parametrize("path", ["/ws", "/blocking"], ids=["handed-over", "in-place"])
def test_frames_in_the_handshake_packet_are_echoed_in_order(deployment: Served, path: str) -> None:
    """Past uWSGI's 4 KiB request buffer: some of these frames are in its buffer, the rest in the socket."""
    payloads = [(0x1, b"a" * 1000), (0x2, os.urandom(3000)), (0x1, b"z" * 5000), (0x2, b"")]
    client = RawClient(deployment.port, HOST, timeout=10)
    try:
        client.send(handshake_request(path) + b"".join(client_frame(op, data) for op, data in payloads))
        expect_switch(client)
        for opcode, data in payloads:
            assert client.read_frame() == (opcode, True, data)
        client.send(client_frame(0x8, (1000).to_bytes(2, "big")))
        assert read_to_eof(client) == CLOSE_1000
    finally:
        client.close()


def test_keep_alive_requests_then_an_upgrade_on_http11_socket(tmp_path: Path) -> None:
    """--http11-socket keeps the connection for the next request: the takeover moves it off uWSGI's fd."""
    served = start("http11-threads", tmp_path)
    try:
        client = RawClient(served.port, HOST, timeout=10)
        try:
            for _ in range(2):
                client.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                status, headers, body = client.read_response()
                assert status == 200 and body.startswith(b"pid="), (status, headers)
                assert headers.get("connection", "").lower() != "close", headers
            client.send(handshake_request("/ws"))
            expect_switch(client)
            assert_echoes(client, b"after two requests")
            client.send(client_frame(0x8, (1000).to_bytes(2, "big")))
            assert read_to_eof(client) == CLOSE_1000
        finally:
            client.close()
    finally:
        served.stop()


# -- shutdown ----------------------------------------------------------------------

HANDED_OVER = ("/ws", "/ws")
BOTH = ("/ws", "/blocking", "/ws")
SHUTDOWNS = [
    # Threads and processes: event-style only. uWSGI's Python plugin skips uwsgi.atexit
    # in a worker with a request in progress, which an in-place WebSocket is (see the
    # xfail below); its gevent loop calls the hook when its hub is done, busy or not.
    ("http-threads", "SIGINT", HANDED_OVER),
    ("http-threads", "SIGTERM", HANDED_OVER),
    ("http-threads", "SIGHUP", HANDED_OVER),
    ("http-processes", "SIGTERM", HANDED_OVER),
    ("gevent", "SIGINT", BOTH),
    ("gevent", "SIGTERM", BOTH),
    ("gevent", "SIGHUP", BOTH),
    ("nginx", "SIGTERM", HANDED_OVER),
]


def requests_ended(output: str) -> int:
    """How many upgrade requests uWSGI has logged as done (it logs each just before it ends)."""
    return len(re.findall(r"GET /(?:ws|blocking) => generated 0 bytes", output))


def assert_signal_closes_with_1001(
    served: Served, signame: str, paths: tuple[str, ...], *, ending: int | None = None
) -> None:
    """``ending``: how many of the upgrade requests end (all unless said: blocking ones may not)."""
    clients: list[RawClient] = []
    try:
        for path in paths:
            clients.append(upgraded(served, path))
            assert_echoes(clients[-1], path.encode())
        # A worker with a request in progress skips uwsgi.atexit; the upgrade requests
        # end just after the handover, and the signal must not race their last steps.
        expected = len(paths) if ending is None else ending
        assert served.wait_output(lambda output: requests_ended(output) >= expected), served.output
        workers = worker_pids(served)
        served.process.send_signal(getattr(signal, signame))
        for client in clients:
            assert client.read_close() == (1001, "Server shutting down")
            client.send(client_frame(0x8, (1001).to_bytes(2, "big")))
            assert client.at_eof(5), "the server did not close TCP after the close handshake"
        if signame == "SIGHUP":  # a graceful reload: new workers serve
            clients.append(upgraded(served))
            assert_echoes(clients[-1], b"after the reload")
        else:
            assert served.process.wait(15) == 0, served.output
        # The app's own uwsgi.atexit ran in the workers too: takeover's hook chains it.
        assert workers, served.output
        assert served.wait_output(lambda output: workers <= atexit_pids(output)), served.output
    finally:
        for client in clients:
            client.close()


@pytest.mark.parametrize(("name", "signame", "paths"), SHUTDOWNS, ids=[f"{n}-{s}" for n, s, _ in SHUTDOWNS])
def test_a_signal_to_the_master_closes_open_websockets_with_1001(
    tmp_path: Path, name: str, signame: str, paths: tuple[str, ...]
) -> None:
    """SIGINT, and SIGTERM with --die-on-term, stop uWSGI; SIGHUP reloads its workers: 1001 either way."""
    served = start(name, tmp_path)
    try:
        assert_signal_closes_with_1001(served, signame, paths)
    finally:
        served.stop()


def test_a_blocking_websocket_on_threads_is_closed_with_1001_at_sigint(tmp_path: Path) -> None:
    """uWSGI's Python plugin skips uwsgi.atexit in a worker with a request in progress; a blocking
    WebSocket used to be one (in place). Handed over like the others, it is closed with 1001 too."""
    served = start("http-threads", tmp_path)
    try:
        assert_signal_closes_with_1001(served, "SIGINT", BOTH, ending=BOTH.count("/ws"))
    finally:
        served.stop()


# -- threads -----------------------------------------------------------------------


def assert_plain_requests_answer_at_once(served: Served, count: int = 3, within: float = 1.0) -> None:
    for _ in range(count):
        started = time.monotonic()
        client = RawClient(served.port, HOST, timeout=within)
        try:
            client.send(PLAIN)
            status, _, body = client.read_response()
        finally:
            client.close()
        assert status == 200 and body.startswith(b"pid="), body
        assert time.monotonic() - started < within


HELD = [
    (("--threads", "2"), "/ws"),
    (("--processes", "2"), "/ws"),
    (("--gevent", "2"), "/ws"),
    # Under --gevent a blocking WebSocket runs in a greenlet of its own as well.
    (("--gevent", "2"), "/blocking"),
]


@pytest.mark.parametrize(
    ("options", "path"), HELD, ids=["threads-2", "processes-2", "gevent-2", "gevent-2-blocking"]
)
def test_websockets_that_leave_the_request_hold_no_thread(
    tmp_path: Path, options: tuple[str, ...], path: str
) -> None:
    """Five WebSockets on two threads (cores, single-threaded processes): plain requests still answer."""
    served = start_uwsgi("--master", *options, module=APP)
    clients: list[RawClient] = []
    try:
        for index in range(5):
            clients.append(upgraded(served, path))
            assert_echoes(clients[-1], f"open {index}".encode())
        assert_plain_requests_answer_at_once(served)
        for index, client in enumerate(clients):
            assert_echoes(client, f"still open {index}".encode())
    finally:
        for client in clients:
            client.close()
        served.stop()


@pytest.mark.parametrize(
    "options", [("--threads", "2"), ("--processes", "1")], ids=["threads", "single-threaded"]
)
def test_blocking_websockets_leave_the_request_thread_too(options: tuple[str, ...]) -> None:
    """A WebSocket read with receive() in the app's own thread is handed over like an
    event-style one: with both of --threads 2 (or the only thread of a process) upgraded,
    plain HTTP is still answered, and the WebSockets still echo."""
    served = start_uwsgi("--master", *options, module=APP)
    blocking = [upgraded(served, "/blocking") for _ in range(2)]
    plain = RawClient(served.port, HOST, timeout=5)
    try:
        for client in blocking:
            assert_echoes(client, b"held")
        plain.send(PLAIN)
        assert plain.read_response()[0] == 200  # no request thread is held
        for client in blocking:
            assert_echoes(client, b"still open")
        assert "holds this" not in served.output
    finally:
        for client in [*blocking, plain]:
            client.close()
        served.stop()


def test_uwsgis_own_tls_socket_is_refused_not_garbled(tmp_path: Path) -> None:
    """--https-socket keeps TLS in uWSGI's C code: no 101, an error saying what to do instead."""
    import ssl

    from tests.servers.test_servers import _tls_files

    tls = _tls_files(tmp_path)
    served = start_uwsgi(
        "--master", "--threads", "2", module=APP, socket_option="--https-socket",
        address_suffix=f",{tls.certfile},{tls.keyfile}",
    )
    try:
        with socket.create_connection((HOST, served.port), timeout=10) as raw:
            sock = tls.client.wrap_socket(raw, server_hostname=HOST)
            sock.sendall(handshake_request("/ws"))
            try:
                head = sock.recv(65536)
            except (ssl.SSLError, ConnectionError):
                head = b""
        assert b" 101 " not in head
        assert served.wait_output(lambda output: "uWSGI terminates TLS on this socket itself" in output)
        with socket.create_connection((HOST, served.port), timeout=10) as raw:
            sock = tls.client.wrap_socket(raw, server_hostname=HOST)
            sock.sendall(PLAIN)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        served.stop()


# -- takeover/_uwsgi.py's helpers, without uWSGI -------------------------------------


def test_read_head_outside_uwsgi_gives_nothing_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    from takeover import _uwsgi

    with caplog.at_level("DEBUG", logger="takeover"):
        assert _uwsgi.read_head(0) == b""
    assert "uWSGI head bytes not read" in caplog.text


@pytest.mark.parametrize(
    ("engine", "threads", "symbol"),
    [
        ("gevent", 1, "uwsgi_gevent_current_wsgi_req"),
        (None, 8, "threaded_current_wsgi_req"),
        (None, 1, "simple_current_wsgi_req"),
        ("ugreen", 1, None),
        ("asyncio", 1, None),
    ],
)
def test_the_current_request_function_follows_the_loop_engine(
    engine: str | None, threads: int, symbol: str | None
) -> None:
    from takeover._uwsgi import _current_request_symbol

    assert _current_request_symbol(engine, threads) == symbol


def test_uwsgi_options_are_read_as_uwsgi_gives_them() -> None:
    from takeover._uwsgi import _option, _option_int

    options = {"threads": b"8", "https-socket": [b"a:1,c,k", b"b:2,c,k"], "gevent": b"x"}
    assert _option(options, "https-socket") == ["a:1,c,k", "b:2,c,k"]
    assert _option(options, "socket") == []
    assert _option_int(options, "threads") == 8
    assert _option_int(options, "gevent") == 1  # not a number: the default
    assert _option_int({b"threads": b"4"}, "threads") == 4


def test_a_connection_on_a_tls_socket_is_recognised_by_its_local_address() -> None:
    from takeover._uwsgi import _is_tls_socket

    with socket.create_server((HOST, 0)) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection((HOST, port)):
            accepted, _ = listener.accept()
            with accepted:
                fd = accepted.fileno()
                assert _is_tls_socket(fd, {"https-socket": f"{HOST}:{port},c.pem,k.pem".encode()})
                assert _is_tls_socket(fd, {"ssl-socket": [f":{port},c.pem,k.pem".encode()]})
                assert not _is_tls_socket(fd, {"https-socket": f"{HOST}:{port + 1},c.pem,k.pem".encode()})
                assert not _is_tls_socket(fd, {"http-socket": f"{HOST}:{port}".encode()})
