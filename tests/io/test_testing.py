"""takeover.testing.connect: a Flask app's WebSocket route tested in process, over a real socket pair."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest
from flask import Flask, abort, request, session

from takeover import ConnectionClosed, upgrade_websocket
from takeover.testing import HandshakeRejected, connect
from tests.paths import ROOT


def make_app() -> Flask:
    app = Flask(__name__)
    app.secret_key = "test"

    @app.post("/login")
    def login() -> str:
        session["user"] = request.form["user"]
        return "ok"

    @app.get("/upgrades")
    def upgrades() -> str:
        return str(session.get("upgrades", 0))

    @app.route("/ws", websocket=True)
    def ws() -> Any:
        if request.args.get("private") and "user" not in session:
            abort(401)
        user = session.get("user", "")
        if request.args.get("count"):
            session["upgrades"] = session.get("upgrades", 0) + 1  # saved as a cookie on the 101
        socket, response = upgrade_websocket(
            request, protocol=request.args.get("protocol"), allowed_origins=["http://localhost"]
        )

        def on_message(event: Any) -> None:
            if event.data == "raise":
                raise RuntimeError("a listener's bug")
            socket.send(f"{user}:{event.data}" if user else event.data)

        socket.onmessage = on_message
        return response

    return app


def test_an_echo_round_trip() -> None:
    with connect(make_app(), "/ws") as ws:
        ws.send("hello")
        assert ws.receive() == "hello"
        ws.send(b"\x00\xff")
        assert ws.receive() == b"\x00\xff"
    assert ws.close_code == 1000


def test_a_login_cookie_from_the_test_client_reaches_the_view() -> None:
    app = make_app()
    client = app.test_client()
    assert client.post("/login", data={"user": "ada"}).status_code == 200
    with connect(app, "/ws?private=1", client=client) as ws:
        ws.send("hi")
        assert ws.receive() == "ada:hi"


def test_refusals_raise_handshake_rejected_with_the_status() -> None:
    with pytest.raises(HandshakeRejected) as unauthorized:
        with connect(make_app(), "/ws?private=1"):
            pass
    assert unauthorized.value.status == 401
    with pytest.raises(HandshakeRejected) as forbidden:
        with connect(make_app(), "/ws", headers={"Origin": "https://evil.example"}):
            pass
    assert forbidden.value.status == 403
    assert b"evil.example" in forbidden.value.body


def test_subprotocol_and_headers_round_trip() -> None:
    with connect(make_app(), "/ws?protocol=chat", subprotocols=["chat", "other"]) as ws:
        assert ws.protocol == "chat"
        assert ws.response_headers["upgrade"] == "websocket"


def test_receive_times_out_within_its_timeout() -> None:
    with connect(make_app(), "/ws") as ws:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            ws.receive(timeout=0.3)
        assert 0.25 <= time.monotonic() - started < 2


def test_a_listeners_exception_is_raised_in_the_test() -> None:
    with pytest.raises(RuntimeError, match="a listener's bug"):
        with connect(make_app(), "/ws", timeout=2) as ws:
            ws.send("raise")
            ws.receive(timeout=1)


def test_a_closed_websocket_raises_connection_closed() -> None:
    with connect(make_app(), "/ws") as ws:
        ws.close(4000, "done")
        assert ws.close_code == 4000
        with pytest.raises(ConnectionClosed):
            ws.receive(timeout=1)


def test_cookies_the_101_sets_are_stored_in_the_test_client() -> None:
    app = make_app()
    client = app.test_client()
    with connect(app, "/ws?count=1", client=client) as ws:  # the view sets session["upgrades"]
        assert ws.response_headers["set-cookie"].startswith("session=")
    with connect(app, "/ws?count=1", client=client):
        pass
    assert client.get("/upgrades").get_data(as_text=True) == "2"  # the 2nd handshake had the 1st cookie


def test_the_socket_pair_is_the_runtimes() -> None:
    from gevent import monkey

    with connect(make_app(), "/ws") as ws:
        ws.send("which")
        assert ws.receive() == "which"
        on_gevent = ws._sock.__class__.__module__.startswith("gevent")
    assert on_gevent is monkey.is_module_patched("socket")


def test_these_tests_pass_under_gevent_too() -> None:
    """This module, the Flask contexts' and takeover.flask_sock's again, in a monkey-patched process."""
    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import sys, pytest\n"
        "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-W', 'ignore::DeprecationWarning',"
        " '-k', 'not under_gevent', 'tests/io/test_testing.py', 'tests/io/test_flask_contexts.py',"
        " 'tests/io/test_flask_sock.py']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "failed" not in result.stdout
