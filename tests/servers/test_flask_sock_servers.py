"""examples/flask_sock/app.py (a Flask-Sock app with only its import changed) on real servers.

takeover serve, gunicorn's gevent worker (takeover.gunicorn.Worker) and its
gthread worker, uWSGI with threads and as one single-threaded process, and
Werkzeug's threaded server (``flask run``), each a process; the clients are the
websockets library, and a raw socket that sends its first frame in the same
write as its handshake (Flask-Sock loses that frame; takeover reads it from the
head bytes). On the threaded servers the routes run in takeover's own threads:
on one single-threaded uWSGI process, a second route is served while the
first is open (test_broadcast).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from websockets.sync.client import connect

from tests.clients import RawClient, handshake_request
from tests.frames import client_frame
from tests.paths import ROOT
from tests.processes import OutputLines, free_port
from tests.redis_server import HOST
from tests.uwsgi_nginx import uwsgi_command

APP = "examples.flask_sock.app:app"


def _python(*arguments: str) -> Callable[[int], list[str]]:
    return lambda port: [sys.executable, *arguments, f"{HOST}:{port}"]


def _uwsgi(*options: str) -> Callable[[int], list[str]]:
    return lambda port: uwsgi_command("--http-socket", port, "--master", *options, module=APP)


def _werkzeug(port: int) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", APP, "run", "--host", HOST, "--port", str(port)]


#: name -> (the command for a port, the line it prints once it serves)
SERVERS: dict[str, tuple[Callable[[int], list[str]], str]] = {
    "takeover serve": (_python("-m", "takeover", "serve", APP, "--bind"), "takeover serving"),
    "gunicorn gevent": (_python("-m", "gunicorn", "-k", "takeover.gunicorn.Worker", APP, "-b"), "Booting"),
    "gunicorn gthread": (_python("-m", "gunicorn", "-k", "gthread", "--threads", "8", APP, "-b"), "Booting"),
    "uwsgi threads": (_uwsgi("--threads", "4"), "spawned uWSGI worker"),
    "uwsgi one process": (_uwsgi("--processes", "1"), "spawned uWSGI worker"),
    "werkzeug": (_werkzeug, "Running on"),
}


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}"


@pytest.fixture(scope="module", params=sorted(SERVERS))
def server(request: pytest.FixtureRequest) -> Iterator[Running]:
    command, ready = SERVERS[request.param]
    port = free_port()
    env = dict(os.environ, CLOCK_INTERVAL="0.05", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        command(port), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    out = OutputLines(process.stdout)
    if out.wait_for(ready, 30) is None:
        process.kill()
        raise RuntimeError(f"{request.param} did not start:\n{out.output}")
    yield Running(process, port)
    process.terminate()
    process.wait(15)
    assert "Traceback" not in out.output, out.output


def test_echo(server: Running) -> None:
    with connect(f"{server.url}/echo", open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\xff")
        assert ws.recv(timeout=10) == b"\x00\xff"


def test_clock(server: Running) -> None:
    with connect(f"{server.url}/clock", open_timeout=10) as ws:
        ticks = [ws.recv(timeout=10) for _ in range(3)]
    assert ticks == sorted(ticks) and len(set(ticks)) == 3


def test_broadcast(server: Running) -> None:
    with connect(f"{server.url}/broadcast", open_timeout=10) as a:
        a.send("a is here")
        assert a.recv(timeout=10) == "a is here"
        with connect(f"{server.url}/broadcast", open_timeout=10) as b:
            b.send("b is here")
            assert b.recv(timeout=10) == "b is here"
            assert a.recv(timeout=10) == "b is here"


def test_a_first_frame_sent_with_the_handshake_is_not_lost(server: Running) -> None:
    client = RawClient(server.port, timeout=10)
    client.send(handshake_request("/echo") + client_frame(0x1, b"right behind the handshake"))
    assert client.read_response()[0] == 101
    assert client.read_frame() == (0x1, True, b"right behind the handshake")
    client.close()
