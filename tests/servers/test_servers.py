"""examples/flask_echo.py on every server we support, each run as its own process.

The same echo suite runs against:

* ``takeover serve`` (our server, through the CLI), in clear and over TLS;
* plain ``gevent.pywsgi.WSGIServer``;
* gunicorn with ``takeover.gunicorn.Worker`` and with stock ``-k gevent``, two workers each;
* Werkzeug's threaded development server;
* uWSGI on ``--http-socket`` with threads and with its gevent loop, and on
  ``--socket`` (the uwsgi protocol) behind nginx's ``uwsgi_pass``.

waitress is not among them: it gives the app no access to the connection, so
takeover answers its upgrades 501 (tests/servers/test_unsupported.py).

Clients are real: the ``websockets`` sync client, and raw sockets for what
needs exact bytes (the first frame in the handshake's packet, bad handshakes,
what follows a clean close, keep-alive before an upgrade).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
from websockets.sync.client import connect

from tests.clients import KEY, RawClient, handshake_request
from tests.frames import client_frame
from tests.paths import ROOT
from tests.processes import OutputLines, free_port
from tests.uwsgi_nginx import nginx_command, uwsgi_command, write_nginx_conf

HOST = "127.0.0.1"
APP = "examples.flask_echo:app"
SCRIPT = ROOT / "examples" / "flask_echo.py"
CLI = ROOT / "takeover" / "cli.py"
START_TIMEOUT = 15.0
LISTENING = re.compile(r"wss?://[^:/]+:(\d+)/")
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
ACCEPT = base64.b64encode(hashlib.sha1(KEY.encode() + GUID).digest()).decode()
CLOSE_1000 = b"\x88\x02\x03\xe8"  # FIN + close, 2-byte payload: status 1000, no reason
BIG = 16 * 1024 * 1024


# -- servers --------------------------------------------------------------------


@dataclass
class Served:
    """A server process serving the Flask echo app; its output is collected by a thread."""

    name: str
    process: subprocess.Popen[bytes]
    port: int = 0
    client_ssl: ssl.SSLContext | None = None
    #: Whether the server is expected to keep HTTP/1.1 connections alive.
    keep_alive: bool = False
    #: Whether it ends each HTTP connection after one response without saying ``Connection:
    #: close`` (uWSGI's ``--http-socket``, which has no keep-alive: ``--http11-socket`` does).
    closes_silently: bool = False
    #: Processes in front of this one (nginx before uWSGI), stopped first.
    fronts: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out = OutputLines(self.process.stdout)

    @property
    def output(self) -> str:
        return self.out.output

    @property
    def url(self) -> str:
        scheme = "wss" if self.client_ssl else "ws"
        return f"{scheme}://{HOST}:{self.port}/ws"

    def wait_listening_line(self, timeout: float = START_TIMEOUT) -> None:
        """Read output until a ``ws(s)://HOST:PORT/`` line; set ``port`` from it."""
        match = self.out.wait_for(LISTENING, timeout)
        if match is None:
            self.fail_start(f"no listening line within {timeout:g} s, or it exited")
        self.port = int(match.group(1))

    def wait_output(self, holds: Callable[[str], bool], timeout: float = 10.0) -> bool:
        """Wait until ``holds(self.output)``, checked as each line arrives; False at EOF or ``timeout``."""
        return self.out.wait_output(holds, timeout)

    def wait_connectable(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until a TCP connection to ``port`` succeeds (gunicorn prints no chosen port)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return
            except OSError:
                pass
            try:  # paces the retries and notices an early exit
                self.process.wait(0.05)
            except subprocess.TimeoutExpired:
                continue
            self.fail_start("exited before listening")
        self.fail_start(f"port {self.port} not connectable within {timeout:g} s")

    def fail_start(self, why: str) -> NoReturn:
        self.stop()
        raise RuntimeError(f"{self.name} did not start ({why}):\n{self.output}")

    def stop(self) -> int:
        for process in [*self.fronts, self.process]:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
        return self.process.returncode


def _spawn(name: str, command: list[str], **options: Any) -> Served:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    return Served(name, process, **options)



def _need_cli() -> None:
    if not CLI.exists():
        pytest.skip("takeover CLI not available yet")


@dataclass(frozen=True)
class TLSFiles:
    certfile: Path
    keyfile: Path
    client: ssl.SSLContext


def _tls_files(directory: Path) -> TLSFiles:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = directory / "server.pem", directory / "server.key"
    cert.private_key_pem.write_to_path(str(keyfile))
    for index, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(str(certfile), append=index > 0)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return TLSFiles(certfile, keyfile, client)


def start_takeover_cli(tmp: Path) -> Served:
    _need_cli()
    command = [sys.executable, "-m", "takeover", "serve", APP, "--bind", f"{HOST}:0"]
    served = _spawn("takeover serve", command, keep_alive=True)
    served.wait_listening_line()
    return served


def start_takeover_cli_tls(tmp: Path) -> Served:
    _need_cli()
    tls = _tls_files(tmp)
    command = [sys.executable, "-m", "takeover", "serve", APP, "--bind", f"{HOST}:0"]
    command += ["--certfile", str(tls.certfile), "--keyfile", str(tls.keyfile)]
    served = _spawn("takeover serve (TLS)", command, keep_alive=True, client_ssl=tls.client)
    served.wait_listening_line()
    return served


def start_gevent_pywsgi(tmp: Path) -> Served:
    command = [sys.executable, str(SCRIPT), "--host", HOST, "--port", "0", "--gevent"]
    served = _spawn("gevent.pywsgi", command, keep_alive=True)
    served.wait_listening_line()
    return served


def start_werkzeug(tmp: Path) -> Served:
    command = [sys.executable, str(SCRIPT), "--host", HOST, "--port", "0"]
    served = _spawn("werkzeug", command)
    served.wait_listening_line()
    return served


def _gunicorn_quiet_options() -> list[str]:
    """``--no-control-socket`` where gunicorn has one: no socket left in ~/.gunicorn by the tests."""
    from gunicorn.config import KNOWN_SETTINGS

    return ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []


def _gunicorn(worker: str, *extra: str, tls: bool = False) -> Callable[[Path], Served]:
    def start(tmp: Path) -> Served:
        port = free_port()
        command = [sys.executable, "-m", "gunicorn", "-k", worker, "-w", "2", "-b", f"{HOST}:{port}"]
        client_ssl = None
        if tls:  # TLS state cannot leave the server's socket: the session is driven in place
            files = _tls_files(tmp)
            command += ["--certfile", str(files.certfile), "--keyfile", str(files.keyfile)]
            client_ssl = files.client
        command += ["--graceful-timeout", "5", *extra, *_gunicorn_quiet_options(), APP]
        name = f"gunicorn -k {worker}{' (TLS)' if tls else ''}"
        served = _spawn(name, command, port=port, client_ssl=client_ssl)
        served.wait_connectable()
        return served

    return start


def start_uwsgi(
    *options: str, socket_option: str = "--http-socket", module: str = APP, address_suffix: str = ""
) -> Served:
    """uWSGI serving ``module`` on ``socket_option HOST:<a free port><address_suffix>`` with ``options``."""
    port = free_port()
    command = uwsgi_command(socket_option, port, *options, module=module, address_suffix=address_suffix)
    # --http-socket has no keep-alive and does not say so; --http11-socket keeps connections.
    keep_alive = socket_option == "--http11-socket"
    served = _spawn(
        f"uwsgi {socket_option} {' '.join(options)}", command, port=port, keep_alive=keep_alive,
        closes_silently=socket_option == "--http-socket",
    )
    served.wait_connectable()
    return served


def start_uwsgi_nginx(tmp: Path, *options: str, module: str = APP) -> Served:
    """uWSGI on ``--socket`` (the uwsgi protocol), nginx's ``uwsgi_pass`` in front; ``port`` is nginx's.

    nginx runs with a configuration of its own in ``tmp`` (see tests/uwsgi_nginx.py)
    and is stopped before uWSGI.
    """
    upstream, port = free_port(), free_port()
    nginx = nginx_command(write_nginx_conf(tmp, port, upstream))
    command = uwsgi_command("--socket", upstream, *options, module=module)
    served = _spawn(f"uwsgi --socket {' '.join(options)} behind nginx", command, port=port, keep_alive=True)
    with open(tmp / "nginx.stderr", "wb") as stderr:
        served.fronts.append(subprocess.Popen(nginx, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr))
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:  # until nginx answers a request that uWSGI served
        try:
            client = RawClient(port, HOST, timeout=2)
            try:
                client.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                if client.read_response()[0] == 200:
                    return served
            finally:
                client.close()
        except (OSError, ConnectionError):
            pass
        try:  # paces the retries and notices an early exit of either
            served.fronts[0].wait(0.05)
        except subprocess.TimeoutExpired:
            if served.process.poll() is None:
                continue
        break
    served.fail_start(f"nginx's stderr: {(tmp / 'nginx.stderr').read_text(errors='replace')}")


SERVERS: dict[str, Callable[[Path], Served]] = {
    "takeover-serve": start_takeover_cli,
    "gevent-pywsgi": start_gevent_pywsgi,
    "gunicorn-takeover-worker": _gunicorn("takeover.gunicorn.Worker"),
    "gunicorn-gevent": _gunicorn("gevent"),
    # Threaded workers: event-style sessions are handed over to takeover's I/O loop thread.
    "gunicorn-sync": _gunicorn("sync", "--timeout", "10"),
    "gunicorn-gthread": _gunicorn("gthread", "--threads", "4"),
    "gunicorn-gthread-tls": _gunicorn("gthread", "--threads", "4", tls=True),
    "werkzeug": start_werkzeug,
    "takeover-serve-tls": start_takeover_cli_tls,
    "uwsgi-http-threads": lambda tmp: start_uwsgi("--master", "--threads", "8"),
    "uwsgi-gevent": lambda tmp: start_uwsgi("--master", "--gevent", "100"),
    "uwsgi-nginx": lambda tmp: start_uwsgi_nginx(tmp, "--master", "--threads", "8"),
}


@pytest.fixture(scope="module", params=list(SERVERS))
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The Flask echo app on one server, started once for the whole suite."""
    served = SERVERS[request.param](tmp_path_factory.mktemp(request.param))
    try:
        yield served
        alive = served.process.poll() is None
    finally:
        served.stop()
    assert alive, f"{served.name} died during the suite:\n{served.output}"


# -- clients --------------------------------------------------------------------


def ws_connect(server: Served) -> Any:
    options: dict[str, Any] = {"max_size": None, "open_timeout": 10, "close_timeout": 10}
    if server.client_ssl is not None:
        options["ssl"] = server.client_ssl
    return connect(server.url, **options)


def raw_client(server: Served, timeout: float = 10) -> RawClient:
    """A RawClient, TLS-wrapped on a TLS server."""
    context = server.client_ssl
    if context is None:
        return RawClient(server.port, HOST, timeout)

    def tls_connect(address: tuple[str, int], timeout: float) -> ssl.SSLSocket:
        sock = socket.create_connection(address, timeout=timeout)
        return context.wrap_socket(sock, server_hostname=address[0])

    return RawClient(server.port, HOST, timeout, connect=tls_connect)


def expect_switch(client: RawClient) -> None:
    status, headers, _ = client.read_response()
    assert status == 101, (status, headers)
    assert headers.get("upgrade", "").lower() == "websocket"
    assert headers.get("sec-websocket-accept") == ACCEPT


def read_to_eof(client: RawClient, timeout: float = 5) -> bytes:
    """All the bytes left on the connection until EOF; fails if EOF takes over ``timeout`` s."""
    deadline = time.monotonic() + timeout
    data, client.buffer = client.buffer, b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"no EOF within {timeout:g} s; read so far: {data!r}")
        client.sock.settimeout(remaining)
        try:
            chunk = client.sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def assert_still_echoes(server: Served) -> None:
    with ws_connect(server) as ws:
        ws.send("still there?")
        assert ws.recv(timeout=10) == "still there?"


# -- the suite ------------------------------------------------------------------


def test_text_is_echoed_as_text(server: Served) -> None:
    with ws_connect(server) as ws:
        ws.send("héllo, wörld")
        assert ws.recv(timeout=10) == "héllo, wörld"


def test_binary_is_echoed_as_binary(server: Served) -> None:
    with ws_connect(server) as ws:
        ws.send(b"\x00\xff\x10binary")
        assert ws.recv(timeout=10) == b"\x00\xff\x10binary"


@pytest.mark.parametrize("message", ["", b""], ids=["text", "binary"])
def test_empty_message_is_echoed(server: Served, message: str | bytes) -> None:
    with ws_connect(server) as ws:
        ws.send(message)
        reply = ws.recv(timeout=10)
    assert reply == message and type(reply) is type(message)


def test_16_mib_binary_message(server: Served) -> None:
    payload = os.urandom(BIG)
    with ws_connect(server) as ws:
        ws.send(payload)
        reply = ws.recv(timeout=30)
    assert isinstance(reply, bytes) and len(reply) == BIG
    assert hashlib.sha256(reply).digest() == hashlib.sha256(payload).digest()


def test_first_frame_in_the_handshake_packet_is_echoed(server: Served) -> None:
    client = raw_client(server)
    try:
        client.send(handshake_request("/ws") + client_frame(0x1, b"in the same packet"))
        expect_switch(client)
        assert client.read_frame() == (0x1, True, b"in the same packet")
    finally:
        client.close()


BAD_HANDSHAKES = {
    "missing-key": (handshake_request("/ws", omit=("Sec-WebSocket-Key",)), {400}),
    "version-8": (handshake_request("/ws", headers={"Sec-WebSocket-Version": "8"}), {426}),
    # Flask answers 405 for POST on a GET route before the view runs.
    "post": (handshake_request("/ws", method="POST"), {400, 405}),
}


@pytest.mark.parametrize("case", list(BAD_HANDSHAKES))
def test_bad_handshake_is_answered_4xx_and_the_server_keeps_serving(server: Served, case: str) -> None:
    request, statuses = BAD_HANDSHAKES[case]
    client = raw_client(server)
    try:
        client.send(request)
        status, headers, _ = client.read_response()
    finally:
        client.close()
    assert status in statuses, (status, headers)
    if status == 426:
        assert headers.get("sec-websocket-version") == "13", headers
    assert "sec-websocket-accept" not in headers
    assert_still_echoes(server)


def test_client_close_gets_one_close_frame_then_eof(server: Served) -> None:
    """Nothing after the server's close frame: no HTTP response, no stray bytes (Flask-Sock's bug)."""
    client = raw_client(server)
    try:
        client.send(handshake_request("/ws"))
        expect_switch(client)
        client.send(client_frame(0x1, b"before closing"))
        assert client.read_frame() == (0x1, True, b"before closing")
        client.send(client_frame(0x8, (1000).to_bytes(2, "big")))
        rest = read_to_eof(client)
    finally:
        client.close()
    assert rest == CLOSE_1000


def test_keep_alive_requests_then_an_upgrade_on_the_same_connection(server: Served) -> None:
    client = raw_client(server)
    try:
        for _ in range(2):
            client.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, headers, body = client.read_response()
            assert status == 200 and b"takeover echo" in body, (status, headers)
            if server.closes_silently:
                # The server's choice (HTTP/1.1 lets it close; it just does not say so):
                # what is checked then is that it does close, with nothing after the response.
                assert read_to_eof(client) == b""
                pytest.skip(f"{server.name} closes after each response (no keep-alive)")
            if headers.get("connection", "").lower() == "close":
                assert not server.keep_alive, f"{server.name} closes after {headers}"
                pytest.skip(f"{server.name} answers Connection: close (no keep-alive)")
        client.send(handshake_request("/ws"))
        expect_switch(client)
        client.send(client_frame(0x2, b"after two requests"))
        assert client.read_frame() == (0x2, True, b"after two requests")
        client.send(client_frame(0x8, (1000).to_bytes(2, "big")))
        assert read_to_eof(client) == CLOSE_1000
    finally:
        client.close()


def test_server_is_still_serving_after_the_suite(server: Served) -> None:
    assert server.process.poll() is None, server.output
    assert_still_echoes(server)


def test_a_client_that_never_starts_the_tls_handshake_is_dropped(tmp_path: Path) -> None:
    """header_timeout covers the TLS handshake: a connection that sends nothing is closed."""
    import gevent.socket

    from takeover import create_server

    tls = _tls_files(tmp_path)
    server = create_server(certfile=str(tls.certfile), keyfile=str(tls.keyfile), header_timeout=0.3)
    server.listen(0)
    try:
        silent = gevent.socket.create_connection(server.address, timeout=5)
        started = time.monotonic()
        assert silent.recv(1) == b""  # the server hung up
        assert time.monotonic() - started < 3
        silent.close()
    finally:
        server.close(timeout=1)
