"""The ``takeover`` command, run as real processes on 127.0.0.1."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from takeover.cli import CLIError, parse_app_spec, parse_bind
from tests.clients import RawClient, handshake_request
from tests.frames import client_frame
from tests.processes import stop_process

SERVING = re.compile(r"^takeover serving (\S+) on (wss?)://[^:]+:(\d+)/ \((https?)://[^:]+:(\d+)/\)$")
SCRIPT = Path(sys.executable).parent / "takeover"
# The console script when installed (pip install -e .), else the same command via -m.
TAKEOVER = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "takeover"]
PYTHON_M = [sys.executable, "-m", "takeover"]
DEADLINE = 15.0

APP = """
def app(environ, start_response):
    body = {body!r}
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


WEBSOCKET_APP = """
from takeover import upgrade_websocket

def app(environ, start_response):
    ws, response = upgrade_websocket(environ)  # no idle_timeout: the server's --idle-timeout applies
    ws.onmessage = lambda event: ws.send(event.data)
    return response(environ, start_response)
"""

# A plain WSGI app answers a refused handshake itself: HTTPHandshakeError is a werkzeug HTTPException.
ORIGIN_APP = """
from werkzeug.exceptions import HTTPException

from takeover import upgrade_websocket

def app(environ, start_response):
    try:
        ws, response = upgrade_websocket(environ)  # no allowed_origins: the server's --allowed-origin
    except HTTPException as error:
        return error(environ, start_response)
    return response(environ, start_response)
"""


def write_app(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(APP.format(body=body))


class Served:
    """A ``takeover`` process; its stdout lines are read by a thread into a queue."""

    def __init__(self, command: list[str], cwd: Path) -> None:
        self.stderr_path = cwd / f"stderr-{time.monotonic_ns()}.txt"
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=stderr)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.decode())
        self.lines.put(None)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_serving(self, timeout: float = DEADLINE) -> re.Match[str]:
        """The next ``takeover serving ...`` line, parsed; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no 'serving' line in {timeout} s; stderr: {self.stderr}") from None
            if line is None:
                self.process.wait(5)
                raise AssertionError(f"exited with {self.process.returncode}; stderr: {self.stderr}")
            match = SERVING.match(line.rstrip("\n"))
            assert match, f"unexpected stdout line {line!r}"
            return match

    def stop(self) -> None:
        stop_process(self.process)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """``start(*args, command=TAKEOVER)`` runs ``takeover *args`` in ``tmp_path``; stopped afterwards."""
    started: list[Served] = []

    def run(*args: str, command: list[str] = TAKEOVER) -> Served:
        served = Served([*command, *args], tmp_path)
        started.append(served)
        return served

    yield run
    for served in started:
        served.stop()


def get(url: str, context: ssl.SSLContext | None = None) -> bytes:
    with urllib.request.urlopen(url, timeout=10, context=context) as response:
        body: bytes = response.read()
        return body


def run_error(tmp_path: Path, *args: str) -> str:
    """Run ``takeover *args`` expecting a usage error; return its one stderr line."""
    result = subprocess.run(
        [*TAKEOVER, *args], cwd=tmp_path, capture_output=True, text=True, timeout=DEADLINE
    )
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("takeover: ")
    return lines[0]


# -- serving -------------------------------------------------------------------


def test_serves_a_wsgi_module(tmp_path: Path, start: Callable[..., Served]) -> None:
    write_app(tmp_path / "hello.py", b"hello from the app\n")
    served = start("serve", "hello:app", "--bind", "127.0.0.1:0")
    match = served.wait_serving()
    assert match.group(1) == "hello:app"
    assert (match.group(2), match.group(4)) == ("ws", "http")
    port = int(match.group(3))
    assert port == int(match.group(5)) and port != 0
    assert get(f"http://127.0.0.1:{port}/any/path") == b"hello from the app\n"


def test_python_dash_m_takeover_serves_a_file_path(tmp_path: Path, start: Callable[..., Served]) -> None:
    write_app(tmp_path / "web" / "pages.py", b"from a file\n")
    served = start("serve", "web/pages.py:app", "--bind", ":0", command=PYTHON_M)
    match = served.wait_serving()
    assert match.group(1) == "web/pages.py:app"
    assert get(f"http://127.0.0.1:{match.group(3)}/") == b"from a file\n"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signals_close_the_server_and_exit_0(
    tmp_path: Path, start: Callable[..., Served], signum: int
) -> None:
    write_app(tmp_path / "hello.py", b"hi\n")
    served = start("serve", "hello:app", "--bind", "127.0.0.1:0")
    port = int(served.wait_serving().group(3))
    assert get(f"http://127.0.0.1:{port}/") == b"hi\n"
    served.process.send_signal(signum)
    assert served.process.wait(10) == 0
    assert served.stderr == ""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_sigterm_closes_websockets_with_1001(tmp_path: Path, start: Callable[..., Served]) -> None:
    (tmp_path / "wsapp.py").write_text(WEBSOCKET_APP)
    served = start("serve", "wsapp:app", "--bind", "127.0.0.1:0", "--idle-timeout", "0")
    client = RawClient(int(served.wait_serving().group(3)))
    try:
        client.send(handshake_request("/chat"))
        assert client.read_response()[0] == 101
        client.send(client_frame(0x1, b"echo me"))
        assert client.read_frame() == (0x1, True, b"echo me")
        served.process.send_signal(signal.SIGTERM)
        assert client.read_close() == (1001, "Server shutting down")
        client.send(client_frame(0x8, (1001).to_bytes(2, "big")))
    finally:
        client.close()
    assert served.process.wait(10) == 0


def test_idle_timeout_reaches_in_app_websockets(tmp_path: Path, start: Callable[..., Served]) -> None:
    (tmp_path / "wsapp.py").write_text(WEBSOCKET_APP)
    served = start("serve", "wsapp:app", "--bind", "127.0.0.1:0", "--idle-timeout", "0.6")
    client = RawClient(int(served.wait_serving().group(3)))
    try:
        client.send(handshake_request("/"))
        assert client.read_response()[0] == 101
        assert client.read_frame()[0] == 0x9  # a ping after idle_timeout / 2, left unanswered
        assert client.read_close() == (1001, "No response from ping frame.")
    finally:
        client.close()


@pytest.mark.parametrize("reload", [False, True])
def test_allowed_origin_reaches_in_app_websockets(
    tmp_path: Path, start: Callable[..., Served], reload: bool
) -> None:
    (tmp_path / "wsapp.py").write_text(ORIGIN_APP)
    served = start(
        "serve", "wsapp:app", "--bind", "127.0.0.1:0", "--allowed-origin", "https://App.Example.com:443",
        "--allowed-origin", "http://localhost:8000", *(["--reload"] if reload else []),
    )
    port = int(served.wait_serving().group(3))
    for origin, status in [
        ("https://app.example.com", 101),
        ("http://localhost:8000", 101),
        (None, 101),  # not a browser: no cross-site hijacking to prevent
        ("https://evil.example", 403),
        ("http://localhost:8001", 403),
    ]:
        client = RawClient(port)
        try:
            client.send(handshake_request(headers={"Origin": origin} if origin else {}))
            answer, _, body = client.read_response()
            assert answer == status, (origin, body)
            if status == 403:
                assert body.startswith(f"Origin {origin!r} is not allowed".encode())
        finally:
            client.close()


HUB_APP = """
import os

HUB = os.environ.get("TAKEOVER_HUB", "unset").encode()  # read at import, as an app making its Hub does

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(HUB)))])
    return [HUB]
"""


@pytest.mark.parametrize(
    ("reload", "url"),
    [
        (False, "redis://127.0.0.1:6390/2"),
        (True, "redis://127.0.0.1:6390/2"),
        (False, "redis://127.0.0.1:6390/2,redis://127.0.0.1:6391/2"),  # several servers, one setting
    ],
)
def test_hub_sets_takeover_hub_before_the_app_is_imported(
    tmp_path: Path, start: Callable[..., Served], reload: bool, url: str
) -> None:
    (tmp_path / "hubapp.py").write_text(HUB_APP)
    args = ["serve", "hubapp:app", "--bind", "127.0.0.1:0", "--hub", url, *(["--reload"] if reload else [])]
    served = start(*args)
    assert get(f"http://127.0.0.1:{served.wait_serving().group(3)}/") == url.encode()


def test_tls_serves_https_and_announces_wss(tmp_path: Path, start: Callable[..., Served]) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    for index, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(str(tmp_path / "cert.pem"), append=index > 0)
    write_app(tmp_path / "hello.py", b"over TLS\n")
    served = start(
        "serve", "hello:app", "--bind", "127.0.0.1:0", "--certfile", "cert.pem", "--keyfile", "key.pem"
    )
    match = served.wait_serving()
    assert (match.group(2), match.group(4)) == ("wss", "https")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    assert get(f"https://127.0.0.1:{match.group(3)}/", context) == b"over TLS\n"


def test_reload_restarts_on_a_change_and_stops_on_sigterm(
    tmp_path: Path, start: Callable[..., Served]
) -> None:
    write_app(tmp_path / "hello.py", b"before\n")
    served = start("serve", "hello:app", "--bind", "127.0.0.1:0", "--reload")
    port = int(served.wait_serving().group(3))
    assert get(f"http://127.0.0.1:{port}/") == b"before\n"

    write_app(tmp_path / "hello.py", b"after the edit\n")
    restarted = served.wait_serving()
    assert int(restarted.group(3)) == port  # port 0 is resolved once and kept across restarts
    assert get(f"http://127.0.0.1:{port}/") == b"after the edit\n"
    assert "hello.py changed; restarting" in served.stderr

    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(15) == 0
    with pytest.raises(ConnectionRefusedError):  # the child server is gone too
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


# -- errors: one line on stderr, exit status 2 ----------------------------------


@pytest.mark.parametrize("reload", [False, True])
def test_missing_module(tmp_path: Path, reload: bool) -> None:
    line = run_error(tmp_path, "serve", "nosuchmodule:app", *(["--reload"] if reload else []))
    assert line == "takeover: cannot import module 'nosuchmodule': No module named 'nosuchmodule'"


def test_missing_attribute(tmp_path: Path) -> None:
    write_app(tmp_path / "hello.py", b"")
    line = run_error(tmp_path, "serve", "hello:application")
    assert line == "takeover: module 'hello' has no attribute 'application'"


@pytest.mark.parametrize("spec", ["hello", "hello:", ":app", "hello:app-x", "my-app:app"])
def test_malformed_module_app(tmp_path: Path, spec: str) -> None:
    line = run_error(tmp_path, "serve", spec)
    assert line.startswith(f"takeover: invalid application {spec!r}: ")


@pytest.mark.parametrize("reload", [False, True])
def test_port_in_use(tmp_path: Path, reload: bool) -> None:
    write_app(tmp_path / "hello.py", b"")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["serve", "hello:app", "--bind", f"127.0.0.1:{port}", *(["--reload"] if reload else [])]
        line = run_error(tmp_path, *args)
    assert line == f"takeover: cannot listen on 127.0.0.1:{port}: address already in use"


def test_missing_certificate_file(tmp_path: Path) -> None:
    write_app(tmp_path / "hello.py", b"")
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    line = run_error(tmp_path, "serve", "hello:app", "--certfile", "nope.pem", "--keyfile", "key.pem")
    assert line == "takeover: cannot load certificate file 'nope.pem': No such file or directory"


def test_missing_key_file(tmp_path: Path) -> None:
    write_app(tmp_path / "hello.py", b"")
    (tmp_path / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    line = run_error(tmp_path, "serve", "hello:app", "--certfile", "cert.pem", "--keyfile", "nope.pem")
    assert line == "takeover: cannot load certificate key file 'nope.pem': No such file or directory"


@pytest.mark.parametrize(("given", "missing"), [("--certfile", "--keyfile"), ("--keyfile", "--certfile")])
def test_certfile_and_keyfile_go_together(tmp_path: Path, given: str, missing: str) -> None:
    write_app(tmp_path / "hello.py", b"")
    line = run_error(tmp_path, "serve", "hello:app", given, "some.pem")
    assert line == f"takeover: {given} needs {missing} as well"


@pytest.mark.parametrize("bind", ["127.0.0.1", "::1:8000", "127.0.0.1:http", "127.0.0.1:70000", "[::1]"])
def test_bad_bind(tmp_path: Path, bind: str) -> None:
    line = run_error(tmp_path, "serve", "hello:app", "--bind", bind)
    assert line.startswith(f"takeover: argument --bind/-b: invalid address {bind!r}: ")


@pytest.mark.parametrize(
    ("origin", "why"),
    [("app.example.com", "an origin is scheme://host[:port]"), ("https://app.example.com/", "use ")],
)
def test_bad_allowed_origin(tmp_path: Path, origin: str, why: str) -> None:
    line = run_error(tmp_path, "serve", "hello:app", "--allowed-origin", origin)
    assert line.startswith(f"takeover: argument --allowed-origin: {origin!r} is not an origin: ")
    assert why in line


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:6379", "a hub URL is memory://, redis://"),
        ("memory://x", "memory://"),
        ("redis://127.0.0.1:6379/0,memory://", "memory:// is one process's broker"),
    ],
)
def test_bad_hub(tmp_path: Path, url: str, why: str) -> None:
    line = run_error(tmp_path, "serve", "hello:app", "--hub", url)
    assert line.startswith("takeover: argument --hub: ") and why in line


# -- argument parsing, in process ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        (":9000", ("127.0.0.1", 9000)),
        ("[::1]:0", ("::1", 0)),
        ("[::]:443", ("::", 443)),
        ("localhost:8000", ("localhost", 8000)),
    ],
)
def test_parse_bind(text: str, expected: tuple[str, int]) -> None:
    assert parse_bind(text) == expected


def test_parse_app_spec_finds_the_package_of_a_file(tmp_path: Path) -> None:
    package = tmp_path / "pkg" / "web"
    package.mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "views.py").write_text("")
    spec = parse_app_spec("pkg/web/views.py:app.wsgi", cwd=str(tmp_path))
    assert (spec.module, spec.attribute) == ("pkg.web.views", "app.wsgi")
    assert spec.path_entry == os.path.realpath(tmp_path)
    with pytest.raises(CLIError, match="no such file"):
        parse_app_spec("pkg/missing.py:app", cwd=str(tmp_path))
