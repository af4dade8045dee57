"""Flask's contexts in WebSocket listeners: current_app, g, session, request, current_user, teardowns.

Tested through takeover.testing (in process, real frames); tests/io/test_under_gevent.py
runs this module again under gevent.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask, current_app, g, request, session, url_for
from flask_login import LoginManager, UserMixin, current_user, login_user

from takeover import upgrade_websocket
from takeover.testing import connect


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def make_app(teardowns: list[object]) -> Flask:
    app = Flask("contexts")
    app.secret_key = "test"
    login = LoginManager(app)
    login.user_loader(User)

    @app.teardown_appcontext
    def count(error: BaseException | None) -> None:
        teardowns.append(error)

    @app.before_request
    def before() -> None:
        g.from_the_view = "set before the upgrade"

    @app.post("/login")
    def log_in() -> str:
        login_user(User(request.form["user"]))
        session["colour"] = request.form["colour"]
        return "ok"

    @app.route("/ws", websocket=True)
    def ws() -> Any:
        socket, response = upgrade_websocket(request)

        def on_message(event: Any) -> None:
            g.calls = g.get("calls", 0) + 1  # a fresh g each call: always 1
            socket.send(json.dumps({
                "app": current_app.name,
                "g": g.from_the_view,
                "calls": g.calls,
                "colour": session.get("colour"),
                "room": request.args.get("room"),
                "url": url_for("ws", room="x"),
                "user": current_user.get_id() if current_user.is_authenticated else None,
                "teardowns": len(teardowns),
                "message": event.data,
            }))

        socket.onmessage = on_message
        return response

    return app


def test_a_listener_sees_current_app_g_session_request_and_current_user() -> None:
    teardowns: list[object] = []
    app = make_app(teardowns)
    client = app.test_client()
    assert client.post("/login", data={"user": "ada", "colour": "green"}).status_code == 200
    with connect(app, "/ws?room=42", client=client) as ws:
        ws.send("hi")
        seen = json.loads(ws.receive())
    assert seen == {
        "app": "contexts", "g": "set before the upgrade", "calls": 1, "colour": "green", "room": "42",
        "url": "ws://localhost/ws?room=x", "user": "ada", "teardowns": seen["teardowns"], "message": "hi",
    }


def test_the_app_context_is_torn_down_once_after_each_listener_call() -> None:
    teardowns: list[object] = []
    app = make_app(teardowns)
    with connect(app, "/ws") as ws:
        counts = []
        for n in range(5):
            ws.send(str(n))
            answer = json.loads(ws.receive())
            assert answer["calls"] == 1  # g does not carry from one call to the next
            counts.append(answer["teardowns"])
    assert counts == list(range(counts[0], counts[0] + 5))  # one teardown between two calls, no more


def test_outside_flask_listeners_run_as_before() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        socket, response = upgrade_websocket(environ)
        assert socket.session.context is None
        socket.onmessage = lambda event: socket.send(event.data)
        return response(environ, start_response)

    with connect(app, "/ws") as ws:
        ws.send("plain")
        assert ws.receive() == "plain"


def test_appcontext_signals_fire_for_each_call_when_someone_listens() -> None:
    from flask import appcontext_popped, appcontext_pushed

    teardowns: list[object] = []
    app = make_app(teardowns)
    pushed: list[object] = []
    popped: list[object] = []
    appcontext_pushed.connect(pushed.append, app, weak=False)
    appcontext_popped.connect(popped.append, app, weak=False)
    try:
        with connect(app, "/ws") as ws:
            before = len(pushed)
            for n in range(3):
                ws.send(str(n))
                assert json.loads(ws.receive())["calls"] == 1
            assert len(pushed) - before == 3  # one push per listener call
        assert len(popped) >= len(pushed) - 1
    finally:
        appcontext_pushed.disconnect(pushed.append, app)
        appcontext_popped.disconnect(popped.append, app)


def _monkey_patched() -> bool:
    from gevent import monkey

    return bool(monkey.is_module_patched("socket"))


@pytest.mark.skipif(_monkey_patched(), reason="handing over is for threaded servers, not gevent's")
def test_contexts_in_the_listener_threads_of_a_handed_over_websocket() -> None:
    """As on gunicorn's sync and gthread workers: the I/O loop has the socket, a pool runs the listeners."""
    import socket as socket_module

    from takeover._io import handover
    from tests.clients import RawClient
    from tests.frames import client_frame

    app = Flask("handed-over")
    teardowns: list[object] = []
    app.teardown_appcontext(teardowns.append)
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    with app.test_request_context("/ws?room=9", headers=headers):
        g.who = "the view"
        ws, response = upgrade_websocket(request)
        ws.onmessage = lambda event: ws.send(
            f"{current_app.name} {request.args['room']} {g.who} {len(teardowns)} {event.data}"
        )
    server_end, client_end = socket_module.socketpair()
    handover.claim(ws)
    handover.attach(ws, server_end, b"")
    client = RawClient.__new__(RawClient)
    client.sock, client.buffer = client_end, b""
    client_end.settimeout(10)
    assert client.read_response()[0] == 101
    answers = []
    for n in range(2):
        client.send(client_frame(0x1, f"m{n}".encode()))
        answers.append(client.read_frame()[2].decode())
    assert answers[0].startswith("handed-over 9 the view ")
    first = int(answers[0].split()[4])
    assert answers == [f"handed-over 9 the view {first} m0", f"handed-over 9 the view {first + 1} m1"]
    client.close()
    del response


def test_the_request_outlives_a_server_that_clears_its_environ() -> None:
    """uWSGI reuses (clears) a request's environ once it is over; a listener runs later."""
    from takeover._flask import capture

    app = Flask("cleared")
    app.secret_key = "test"
    app.add_url_rule("/ws/<room>", "ws", lambda room: "")
    with app.test_request_context("/ws/5?mode=fast"):
        session["who"] = "ada"
        g.seen = "in the view"
        context = capture()
        environ = request.environ
    assert context is not None
    environ.clear()

    def listener() -> tuple[Any, ...]:
        return request.args["mode"], request.view_args, url_for("ws", room="6"), session["who"], g.seen

    assert context.call(listener) == ("fast", {"room": "5"}, "/ws/6", "ada", "in the view")
    assert context.call(listener)[0] == "fast"  # and again
