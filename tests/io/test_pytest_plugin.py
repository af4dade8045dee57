"""The ``websocket_connect`` fixture of takeover's pytest plugin (registered as a pytest11 entry point)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, request

from takeover import upgrade_websocket


@pytest.fixture
def app() -> Flask:
    app = Flask("plugin")

    @app.route("/ws", websocket=True)
    def ws() -> Any:
        socket, response = upgrade_websocket(request)
        socket.onmessage = lambda event: socket.send(f"{request.args.get('n', '')}{event.data}")
        return response

    return app


def test_the_fixture_connects_to_the_app_fixture(websocket_connect: Any) -> None:
    with websocket_connect("/ws?n=1:") as ws:
        ws.send("hello")
        assert ws.receive() == "1:hello"
    assert ws.close_code == 1000


def test_without_with_the_websocket_is_closed_at_teardown(websocket_connect: Any) -> None:
    ws = websocket_connect("/ws", timeout=2)
    ws.send("no with")
    assert ws.receive() == "no with"


def test_the_plugin_is_registered() -> None:
    from importlib.metadata import entry_points

    assert any(e.value == "takeover.pytest_plugin" for e in entry_points(group="pytest11"))
