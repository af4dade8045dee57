"""``allowed_origins`` over real sockets: listeners, in-app views, server defaults, the legacy bridge."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import gevent.socket
import pytest
from flask import Flask
from flask import request as flask_request
from werkzeug.wrappers import Request

from takeover import create_server, upgrade_websocket
from takeover.protocol.origin import OriginPolicy
from takeover.server import Server
from tests.clients import RawClient, handshake_request
from tests.frames import client_frame

TEXT, CLOSE = 0x1, 0x8
APP = "https://app.example.com"
EVIL = "https://evil.example"


def gevent_client(port: int) -> RawClient:
    return RawClient(port, timeout=10, connect=gevent.socket.create_connection)


def request(server: Server, origin: str | None, path: str = "/") -> RawClient:
    """A client that sent a handshake from ``origin`` (None: no Origin header)."""
    client = gevent_client(server.address[1])
    headers = {"Origin": origin} if origin is not None else {}
    client.send(handshake_request(path, headers=headers))
    return client


def assert_echoes(client: RawClient, text: bytes = b"hello") -> None:
    client.send(client_frame(TEXT, text))
    assert client.read_frame() == (TEXT, True, text)


def assert_refused(client: RawClient, origin: str) -> bytes:
    """A 403 naming ``origin``; the connection is then closed."""
    status, headers, body = client.read_response()
    assert status == 403, (status, body)
    assert f"Origin {origin!r} is not allowed".encode() in body
    assert b"allowed_origins" in body
    assert headers["content-type"].startswith("text/plain")
    return body


class Listener:
    """An ``upgrade`` listener that echoes, passing ``options`` to ``upgrade_websocket``."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.upgraded: list[str | None] = []

    def __call__(self, request: Request, sock: Any, head: bytes) -> None:
        ws, _ = upgrade_websocket(request, socket=sock, head=head, **self.options)
        self.upgraded.append(request.headers.get("Origin"))
        ws.onmessage = lambda event: ws.send(event.data)


class TestPerCall:
    def test_an_allowed_origin_is_upgraded(self, make_server: Any) -> None:
        server = make_server()
        server.on("upgrade", Listener(allowed_origins=[APP, "http://localhost:8000"]))
        for origin in (APP, "http://localhost:8000"):
            client = request(server, origin)
            assert client.read_response()[0] == 101
            assert_echoes(client)

    def test_another_origin_gets_403_nothing_is_upgraded_and_others_are_served(
        self, make_server: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="takeover.access")
        server = make_server()
        listener = Listener(allowed_origins=[APP])
        server.on("upgrade", listener)
        refused = request(server, EVIL)
        refused.send(client_frame(TEXT, b"sent right after the handshake"))
        assert_refused(refused, EVIL)
        assert refused.at_eof()
        assert refused.buffer == b""  # no frame came back: nothing was upgraded
        assert listener.upgraded == []
        # Logged once: the browser's page learns only that the connection failed.
        refusals = [r.getMessage() for r in caplog.records if "WebSocket refused" in r.getMessage()]
        assert len(refusals) == 1
        assert refusals[0].startswith("WebSocket refused / peer=127.0.0.1:")
        assert f"status=403: Origin '{EVIL}' is not allowed" in refusals[0]
        welcome = request(server, APP)
        assert welcome.read_response()[0] == 101
        assert_echoes(welcome)
        assert listener.upgraded == [APP]

    def test_a_request_without_origin_is_allowed_by_a_list(self, make_server: Any) -> None:
        server = make_server()
        server.on("upgrade", Listener(allowed_origins=[APP]))
        assert_refused(request(server, EVIL), EVIL)  # the check is on...
        client = request(server, None)  # ...and a non-browser client passes it
        assert client.read_response()[0] == 101
        assert_echoes(client)

    def test_null_is_allowed_only_when_listed(self, make_server: Any) -> None:
        server = make_server()
        server.on("upgrade", lambda r, s, h: Listener(allowed_origins=[APP, *r.args.getlist("o")])(r, s, h))
        assert_refused(request(server, "null"), "null")
        listed = request(server, "null", "/?o=null")
        assert listed.read_response()[0] == 101

    def test_a_function_decides_and_gets_none_for_no_origin(self, make_server: Any) -> None:
        seen: list[str | None] = []

        def allowed(origin: str | None) -> bool:
            seen.append(origin)
            return origin is not None and origin.endswith(".example.com")

        server = make_server()
        server.on("upgrade", Listener(allowed_origins=allowed))
        client = request(server, "https://tenant.example.com")
        assert client.read_response()[0] == 101
        assert_echoes(client)
        status, _, body = request(server, None).read_response()
        assert status == 403
        assert body == (
            b"A WebSocket request without an Origin header is not allowed here: "
            b"the allowed_origins function refused it"
        )
        status, _, body = request(server, EVIL).read_response()
        assert status == 403 and b"the allowed_origins function refused it" in body
        assert seen == ["https://tenant.example.com", None, EVIL]

    def test_origins_are_compared_normalised(self, make_server: Any) -> None:
        server = make_server()
        server.on("upgrade", Listener(allowed_origins=["HTTPS://App.Example.com:443", "http://LOCALHOST:80"]))
        for origin in (APP, "http://localhost", "https://APP.example.com:443"):
            assert request(server, origin).read_response()[0] == 101, origin
        for origin in ("http://app.example.com", "https://app.example.com:8443", "http://localhost:8000"):
            assert_refused(request(server, origin), origin)


class TestServerDefault:
    @pytest.fixture
    def flask_app(self) -> Any:
        app = Flask(__name__)
        app.config["reached"] = []

        @app.route("/ws", websocket=True)
        def ws() -> Any:
            sock, response = upgrade_websocket(flask_request)  # no allowed_origins: the server's
            app.config["reached"].append(flask_request.headers.get("Origin"))
            sock.onmessage = lambda event: sock.send(event.data)
            return response

        @app.route("/page")
        def page() -> str:
            return "a page"

        return app

    def test_in_app_upgrades_use_the_server_default(self, make_server: Any, flask_app: Any) -> None:
        server = make_server(flask_app.wsgi_app, allowed_origins=[APP])
        assert server.options.allowed_origins == OriginPolicy(origins=frozenset({APP}))
        refused = request(server, EVIL, "/ws")
        assert_refused(refused, EVIL)  # Flask answers the HTTPHandshakeError with its 403
        assert flask_app.config["reached"] == []
        # Plain HTTP requests are not concerned: the same page from the same origin is served.
        page = gevent_client(server.address[1])
        page.send(f"GET /page HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {EVIL}\r\n\r\n".encode())
        status, _, body = page.read_response()
        assert (status, body) == (200, b"a page")
        for origin in (APP, None):
            client = request(server, origin, "/ws")
            assert client.read_response()[0] == 101
            assert_echoes(client)
        assert flask_app.config["reached"] == [APP, None]

    def test_upgrade_listeners_use_the_server_default(self, make_server: Any) -> None:
        server = make_server(allowed_origins=[APP])
        listener = Listener()
        server.on("upgrade", listener)
        refused = request(server, EVIL)
        assert_refused(refused, EVIL)
        assert refused.at_eof()
        client = request(server, APP)
        assert client.read_response()[0] == 101
        assert_echoes(client)
        assert listener.upgraded == [APP]

    def test_a_function_as_the_server_default(self, make_server: Any) -> None:
        server = make_server(allowed_origins=lambda origin: origin == APP)
        server.on("upgrade", Listener())
        assert request(server, APP).read_response()[0] == 101
        assert request(server, None).read_response()[0] == 403
        assert request(server, EVIL).read_response()[0] == 403

    def test_a_call_overrides_the_server_default(self, make_server: Any) -> None:
        server = make_server(allowed_origins=[APP])
        other = "https://other.example"
        own, everyone = Listener(allowed_origins=[other]), Listener(allowed_origins=None)
        server.on("upgrade", lambda r, s, h: (own if r.path == "/own" else everyone)(r, s, h))
        assert request(server, other, "/own").read_response()[0] == 101
        assert_refused(request(server, APP, "/own"), APP)  # the server's list does not apply here
        assert request(server, EVIL, "/everyone").read_response()[0] == 101  # None: no check

    @pytest.mark.parametrize(
        ("value", "error", "message"),
        [
            (APP, TypeError, r"write allowed_origins=\['https://app.example.com'\]"),
            (["app.example.com"], ValueError, "Invalid origin in allowed_origins"),
            ([APP + "/"], ValueError, "use 'https://app.example.com'"),
            (42, TypeError, "allowed_origins must be None, a list of origins or a function"),
        ],
    )
    def test_the_server_checks_its_option_at_once(self, value: Any, error: type, message: str) -> None:
        with pytest.raises(error, match=message):
            create_server(allowed_origins=value)
        with pytest.raises(error, match=message):
            Server(allowed_origins=value)


class TestLegacy:
    @pytest.fixture
    def serve(self) -> Iterator[Any]:
        from gevent.pywsgi import WSGIServer

        servers: list[Any] = []

        def start(handler_class: Any) -> int:
            def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
                ws = environ["wsgi.websocket"]
                message = ws.receive()
                while message is not None:
                    ws.send(message)
                    message = ws.receive()
                return []

            server = WSGIServer(("127.0.0.1", 0), app, handler_class=handler_class, log=None)
            server.start()
            servers.append(server)
            return int(server.server_port)

        yield start
        for server in servers:
            server.stop(timeout=1)

    @pytest.mark.parametrize("form", ["list", "method"])
    def test_the_handler_option(self, serve: Any, form: str) -> None:
        from takeover.legacy import WebSocketHandler

        class ListHandler(WebSocketHandler):
            allowed_origins = (APP,)

        class MethodHandler(WebSocketHandler):
            def allowed_origins(self, origin: str | None) -> bool:  # type: ignore[override]
                return origin == APP

        port = serve(ListHandler if form == "list" else MethodHandler)
        refused = gevent_client(port)
        refused.send(handshake_request(headers={"Origin": EVIL}))
        status, _, body = refused.read_response()
        assert status == 403 and b"'https://evil.example' is not allowed" in body
        assert refused.at_eof()
        client = gevent_client(port)
        client.send(handshake_request(headers={"Origin": APP}))
        assert client.read_response()[0] == 101
        assert_echoes(client)
        client.send(client_frame(CLOSE, (1000).to_bytes(2, "big")))
