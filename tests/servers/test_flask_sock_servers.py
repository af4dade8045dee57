"""examples/flask_sock/app.py (a Flask-Sock app with only its import changed) on real servers.

takeover serve, gunicorn's gevent worker (takeover.gunicorn.Worker) and its
gthread worker, each a process; the clients are the websockets library, and a
raw socket that sends its first frame in the same write as its handshake
(Flask-Sock loses that frame; takeover reads it from the head bytes).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from websockets.sync.client import connect

from tests.clients import RawClient, handshake_request
from tests.frames import client_frame
from tests.paths import ROOT
from tests.processes import OutputLines, free_port
from tests.redis_server import HOST

APP = "examples.flask_sock.app:app"
SERVERS = {
    "takeover serve": (["-m", "takeover", "serve", APP, "--bind"], "takeover serving"),
    "gunicorn gevent": (["-m", "gunicorn", "-k", "takeover.gunicorn.Worker", APP, "-b"], "Booting worker"),
    "gunicorn gthread": (["-m", "gunicorn", "-k", "gthread", "--threads", "8", APP, "-b"], "Booting worker"),
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
    arguments, ready = SERVERS[request.param]
    port = free_port()
    env = dict(os.environ, CLOCK_INTERVAL="0.05", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, *arguments, f"{HOST}:{port}"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
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
