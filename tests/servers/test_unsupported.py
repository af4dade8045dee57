"""Servers that give the application no access to the connection: the upgrade is answered 501.

waitress and mod_wsgi cannot serve WebSockets (tests/servers/test_servers.py has
no row for them). examples/flask_echo.py's app runs under a real ``waitress-serve``
process and is checked with raw sockets: each upgrade gets the exact 501 with a
one-line body naming waitress and the servers that work, the log has one WARNING
and no traceback, and plain HTTP goes on. In this process, the WSGI app is called
with fabricated environs (mod_wsgi's, waitress's, and a server takeover knows
nothing of): the same 501, and the WebSocket gets ``error`` then ``close`` 1006.
"""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, request

from takeover import _log, upgrade_websocket
from tests.clients import KEY, RawClient
from tests.not_implemented import CONTENT_TYPE, check_501_body, check_one_warning, check_upgrade_is_refused
from tests.paths import ROOT
from tests.processes import OutputLines

HOST = "127.0.0.1"
SERVING = re.compile(r"Serving on http://[^:/]+:(\d+)")
START_TIMEOUT = 20.0


class Waitress:
    """``waitress-serve examples.flask_echo:app`` on an ephemeral port; its output read by a thread."""

    def __init__(self) -> None:
        command = [sys.executable, "-m", "waitress", f"--listen={HOST}:0", "examples.flask_echo:app"]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        pipes: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, **pipes)
        self.out = OutputLines(self.process.stdout)
        self.port = self._wait_serving()

    def _wait_serving(self) -> int:
        match = self.out.wait_for(SERVING, START_TIMEOUT)
        if match is not None:
            return int(match.group(1))
        self.stop()
        raise RuntimeError(f"waitress-serve did not start within {START_TIMEOUT:g} s:\n{self.output}")

    @property
    def output(self) -> str:
        return self.out.output

    def stop(self) -> int | None:
        """SIGTERM; the exit status (None if it had to be killed). The output is complete afterwards."""
        status: int | None = None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                status = self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        else:
            status = self.process.returncode
        self.out.join(10)
        return status


@pytest.fixture
def waitress() -> Iterator[Waitress]:
    server = Waitress()
    try:
        yield server
    finally:
        server.stop()


def get_page(port: int) -> None:
    """``GET /`` on a new connection is answered with the example's page."""
    client = RawClient(port, HOST, timeout=10)
    try:
        client.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        status, headers, body = client.read_response()
    finally:
        client.close()
    assert status == 200 and b"takeover echo" in body, (status, headers, body[:200])


def test_waitress_answers_upgrades_501_and_keeps_serving_http(waitress: Waitress) -> None:
    get_page(waitress.port)
    first = check_upgrade_is_refused(waitress.port, "waitress")
    second = check_upgrade_is_refused(waitress.port, "waitress")
    assert second == first
    get_page(waitress.port)
    assert waitress.process.poll() is None, waitress.output
    waitress.stop()  # the log is complete once the process has exited
    check_one_warning(waitress.output, "waitress")


# -- in this process: the WSGI app called with fabricated environs ----------------------


def fabricated_environ(**extra: Any) -> dict[str, Any]:
    """A WebSocket upgrade of ``/ws`` as a WSGI server would pass it, with no socket in it."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/ws",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_UPGRADE": "websocket",
        "HTTP_CONNECTION": "Upgrade",
        "HTTP_SEC_WEBSOCKET_KEY": KEY,
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    environ.update(extra)
    return environ


#: (environ keys of the server, the name the 501 must give it).
ENVIRONS = {
    "mod_wsgi": ({"mod_wsgi.version": (5, 0, 0), "SERVER_SOFTWARE": "Apache/2.4"}, "mod_wsgi"),
    "waitress": ({"waitress.client_disconnected": lambda: False, "SERVER_SOFTWARE": "waitress"}, "waitress"),
    # No key takeover knows (no socket, no hook, no gevent reader): named by SERVER_SOFTWARE.
    "unknown": ({"SERVER_SOFTWARE": "ExampleServer/1.0"}, "ExampleServer/1.0"),
}


def call(app: Any, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """Call the WSGI ``app``: its status, headers and whole body."""
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        started.append((status, headers))

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    assert len(started) == 1, started
    return started[0][0], started[0][1], body


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget which servers were warned about in this process, so the first upgrade warns again."""
    monkeypatch.setattr(_log, "_warned", set())


@pytest.mark.parametrize("kind", list(ENVIRONS))
def test_flask_echo_answers_501_where_there_is_no_connection(
    kind: str, fresh_warnings: None, caplog: pytest.LogCaptureFixture
) -> None:
    from examples.flask_echo import app

    keys, name = ENVIRONS[kind]
    caplog.set_level(logging.WARNING, logger="takeover")
    answers = [call(app, fabricated_environ(**keys)) for _ in range(2)]
    for status, headers, body in answers:
        assert status == "501 Not Implemented"
        assert dict(headers) == {"Content-Type": CONTENT_TYPE, "Content-Length": str(len(body))}
        check_501_body(body, name)
    warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1, [record.getMessage() for record in warnings]
    assert name in warnings[0].getMessage() and warnings[0].exc_info is None


def recording_app(events: list[tuple[str, Any]], done: threading.Event) -> Flask:
    """A Flask app whose ``/ws`` upgrades and records the WebSocket's events."""
    app = Flask(__name__)

    @app.route("/ws", websocket=True)
    def ws() -> Any:
        socket, response = upgrade_websocket(request)
        for kind in ("open", "message", "error", "close"):
            socket.add_event_listener(kind, lambda event, kind=kind: events.append((kind, event)))
        socket.add_event_listener("close", lambda event: done.set())
        return response

    return app


@pytest.mark.parametrize("kind", list(ENVIRONS))
def test_the_websocket_gets_error_then_close_1006(kind: str, fresh_warnings: None) -> None:
    keys, name = ENVIRONS[kind]
    events: list[tuple[str, Any]] = []
    done = threading.Event()
    status, _, body = call(recording_app(events, done), fabricated_environ(**keys))
    assert status == "501 Not Implemented"
    check_501_body(body, name)
    assert done.wait(5), f"no close event within 5 s: {events}"
    assert [kind for kind, _ in events] == ["error", "close"], events
    error, close = events[0][1], events[1][1]
    assert name in error.message, error
    assert close.code == 1006 and not close.was_clean, close
