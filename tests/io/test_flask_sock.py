"""takeover.flask_sock, in process through takeover.testing: Flask-Sock's API, its options and its errors.

examples/flask_sock/app.py is a Flask-Sock app with only its import changed;
tests/servers/test_flask_sock_servers.py runs it on real servers. This module
also runs under gevent (tests/io/test_testing.py's last test).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Blueprint, Flask, g, request, session

from takeover.flask_sock import ConnectionClosed, Sock
from takeover.testing import connect
from tests.paths import ROOT


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    monkeypatch.setenv("CLOCK_INTERVAL", "0.05")
    import importlib

    import examples.flask_sock.app as module

    yield importlib.reload(module).app  # the interval is read at import


def test_the_example_echo_sends_text_and_binary_back(example: Flask) -> None:
    with connect(example, "/echo") as ws:
        ws.send("hello")
        assert ws.receive() == "hello"
        ws.send(b"\x00\xff")
        assert ws.receive() == b"\x00\xff"
        ws.send("close")  # the route returns: Flask-Sock closes with 1000
        with pytest.raises(Exception, match="1000"):
            ws.receive(timeout=2)
    assert ws.close_code == 1000


def test_the_example_clock_ticks_until_the_client_goes(example: Flask) -> None:
    with connect(example, "/clock") as ws:
        first, second = ws.receive(), ws.receive()
    assert first < second and first.startswith("20")


def test_the_example_broadcast_reaches_every_client_in_the_list(example: Flask) -> None:
    with connect(example, "/broadcast") as a:
        a.send("a is here")
        assert a.receive() == "a is here"  # its route is in the list: it got its own message
        with connect(example, "/broadcast") as b:
            b.send("b is here")
            assert b.receive() == "b is here"
            assert a.receive() == "b is here"
            a.send("to everyone")
            assert a.receive() == "to everyone" and b.receive() == "to everyone"
        a.send("b has gone")
        assert a.receive() == "b has gone"  # and nothing went wrong sending to the list


def make_app(**options: Any) -> tuple[Flask, list[Any]]:
    """Routes for the tests; what they see goes to the list, and app.config["SEEN"] is set."""
    app = Flask("sock")
    app.secret_key = "test"
    if options:
        app.config["SOCK_SERVER_OPTIONS"] = options
    seen: list[Any] = []
    app.config["SEEN"] = threading.Event()
    sock = Sock()  # init_app later, as an app factory does
    bp = Blueprint("rooms", __name__)

    @app.before_request
    def before() -> None:
        g.user = session.get("user", "nobody")

    @sock.route("/timeout")
    def timeout(ws: Any) -> None:
        seen.append(ws.receive(timeout=0.1))
        ws.send("after the timeout")
        ws.receive()

    @sock.route("/closed")
    def closed(ws: Any) -> None:
        try:
            while True:
                ws.receive()
        except ConnectionClosed as error:
            seen.append((error.reason, error.message, ws.connected))
            app.config["SEEN"].set()
            raise

    @sock.route("/fails")
    def fails(ws: Any) -> None:
        raise RuntimeError("a route's bug")

    @sock.route("/context/<name>", bp=bp)
    def context(ws: Any, name: str) -> None:
        ws.send(f"{name} {request.args.get('q')} {g.user} {ws.subprotocol}")
        ws.close(4001, "done")

    app.register_blueprint(bp)
    sock.init_app(app)
    return app, seen


def test_receive_returns_none_after_its_timeout() -> None:
    app, seen = make_app()
    with connect(app, "/timeout") as ws:
        assert ws.receive() == "after the timeout"
    assert seen == [None]


def test_connection_closed_has_the_close_code_and_message() -> None:
    app, seen = make_app()
    with connect(app, "/closed") as ws:
        ws.close(4002, "bye")
    assert app.config["SEEN"].wait(5)  # the route's thread sees the close after the client does
    assert seen == [(4002, "bye", False)]


def test_a_route_that_raises_closes_1011_and_the_test_sees_the_error() -> None:
    app, _ = make_app()
    with connect(app, "/fails", raise_server_exceptions=False) as ws:
        with pytest.raises(Exception, match="1011"):
            ws.receive(timeout=2)
    assert ws.close_code == 1011
    with pytest.raises(RuntimeError, match="a route's bug"):  # by default takeover.testing raises it again
        with connect(app, "/fails") as ws:
            ws.receive(timeout=2)


def test_url_values_blueprints_request_g_and_subprotocols() -> None:
    app, _ = make_app(subprotocols=["chat", "v2"])
    with connect(app, "/context/lobby?q=1", subprotocols=["v2", "chat"]) as ws:
        assert ws.protocol == "v2"  # the client's first choice among the server's
        assert ws.receive() == "lobby 1 nobody v2"
        with pytest.raises(Exception, match="4001"):
            ws.receive(timeout=2)
    assert (ws.close_code, ws.close_reason) == (4001, "done")


def test_sock_server_options_max_message_size_closes_1009() -> None:
    app, _ = make_app(max_message_size=10, ping_interval=5, receive_bytes=4096)
    with connect(app, "/timeout") as ws:
        ws.send("x" * 11)
        with pytest.raises(Exception, match="1009"):
            for _ in range(3):
                ws.receive(timeout=2)
    assert ws.close_code == 1009


def test_an_unknown_option_is_a_clear_error() -> None:
    app, _ = make_app(pingInterval=5)
    app.config["PROPAGATE_EXCEPTIONS"] = True
    with pytest.raises(TypeError, match="pingInterval"):
        with connect(app, "/timeout"):
            pass


def test_flask_sock_itself_is_never_imported() -> None:
    code = "import sys, examples.flask_sock.app; assert 'flask_sock' not in sys.modules; print('ok')"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "ok", result.stderr
