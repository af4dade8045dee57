"""takeover.Server's node:http parity, in-process: events, limits, close(), in-app errors."""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent
import gevent.event
import gevent.socket
import pytest
from flask import Flask
from flask import request as flask_request
from werkzeug.wrappers import Request

from takeover import create_server, upgrade_websocket
from takeover.server import Server
from tests.clients import RawClient, handshake_request
from tests.frames import client_frame
from tests.paths import EXAMPLES
from tests.processes import start_server

TEXT, CLOSE = 0x1, 0x8


def gevent_client(server: Server, timeout: float = 10) -> RawClient:
    return RawClient(server.address[1], timeout=timeout, connect=gevent.socket.create_connection)


def echo_listener(request: Request, sock: Any, head: bytes) -> None:
    ws, _ = upgrade_websocket(request, socket=sock, head=head)
    ws.onmessage = lambda event: ws.send(event.data)


class TestEvents:
    def test_emitter_api(self) -> None:
        server = create_server()
        calls: list[tuple[str, int]] = []

        def first(value: int) -> None:
            calls.append(("first", value))

        def once(value: int) -> None:
            calls.append(("once", value))

        assert server.on("x", first) is server
        server.once("x", once)
        assert server.listener_count("x") == 2
        assert server.emit("x", 1) is True
        assert server.emit("x", 2) is True
        server.off("x", first)
        assert server.emit("x", 3) is False
        assert calls == [("first", 1), ("once", 1), ("first", 2)]

    def test_listening_connection_and_close_events(self) -> None:
        seen: list[str] = []
        server = create_server()
        server.on("listening", lambda: seen.append("listening"))
        server.on("connection", lambda sock: seen.append(f"connection:{sock.getpeername()[0]}"))
        server.on("close", lambda: seen.append("close"))
        server.listen(0)
        client = gevent_client(server)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.read_response()[0] == 404
        server.close()
        assert seen == ["listening", "connection:127.0.0.1", "close"]

    def test_upgrades_without_a_listener_go_to_the_app(self, make_server: Any) -> None:
        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            start_response("200 OK", [("Content-Length", "6")])
            return [b"app ok"]

        server = make_server(app)
        client = gevent_client(server)
        client.send(handshake_request())
        status, _, body = client.read_response()
        assert (status, body) == (200, b"app ok")

    def test_should_upgrade_sends_the_rest_to_the_app(self, make_server: Any) -> None:
        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            start_response("418 I'm a teapot", [("Content-Length", "0")])
            return []

        server = make_server(app, should_upgrade=lambda request: request.path == "/ws")
        server.on("upgrade", echo_listener)
        other = gevent_client(server)
        other.send(handshake_request("/other"))
        assert other.read_response()[0] == 418
        taken = gevent_client(server)
        taken.send(handshake_request("/ws") + client_frame(TEXT, b"upgraded"))
        assert taken.read_response()[0] == 101
        assert taken.read_frame() == (TEXT, True, b"upgraded")

    def test_connect_without_a_listener_closes_the_connection(self, make_server: Any) -> None:
        server = make_server()
        client = gevent_client(server)
        client.send(b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n")
        assert client.at_eof()
        assert client.buffer == b""

    def test_connect_listener_gets_the_target_and_head(self, make_server: Any) -> None:
        server = make_server()
        got = gevent.event.AsyncResult()

        def on_connect(request: Request, sock: Any, head: bytes) -> None:
            got.set((request.method, request.environ["RAW_URI"], head))
            sock.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            sock.close()

        server.on("connect", on_connect)
        client = gevent_client(server)
        client.send(b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n\x16\x03\x01")
        assert client.read_response()[0] == 200
        assert got.get(timeout=5) == ("CONNECT", "example.test:443", b"\x16\x03\x01")


class TestClientErrors:
    def test_oversized_headers_get_431(self, make_server: Any) -> None:
        server = make_server(max_header_size=1024)
        client = gevent_client(server)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n")
        status, headers, _ = client.read_response()
        assert status == 431 and headers["connection"] == "close"
        assert client.at_eof()

    def test_too_many_headers_get_431(self, make_server: Any) -> None:
        server = make_server()
        client = gevent_client(server)
        many = b"".join(b"X-%d: y\r\n" % index for index in range(150))
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
        assert client.read_response()[0] == 431

    def test_slow_headers_get_408(self, make_server: Any) -> None:
        server = make_server(header_timeout=0.3)
        client = gevent_client(server)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        status, headers, _ = client.read_response()
        assert status == 408 and headers["connection"] == "close"
        assert client.at_eof()

    def test_an_idle_keep_alive_connection_is_closed_quietly(self, make_server: Any) -> None:
        server = make_server(header_timeout=0.3)
        client = gevent_client(server)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.read_response()[0] == 404
        assert client.at_eof()
        assert client.buffer == b""

    def test_malformed_requests_get_400(self, make_server: Any) -> None:
        server = make_server()
        client = gevent_client(server)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n")
        assert client.read_response()[0] == 400

    def test_client_error_listener_answers_itself(self, make_server: Any) -> None:
        server = make_server(max_header_size=100)
        errors: list[tuple[int, str]] = []

        def on_client_error(error: Any, sock: Any) -> None:
            errors.append((error.status, error.code))
            sock.sendall(b"HTTP/1.1 431 Custom\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")

        server.on("clientError", on_client_error)
        client = gevent_client(server)
        client.send(b"GET / HTTP/1.1\r\nX: " + b"z" * 200 + b"\r\n\r\n")
        status, _, _ = client.read_response()
        assert status == 431
        assert errors == [(431, "HPE_HEADER_OVERFLOW")]

    def test_a_slow_client_error_listener_is_not_interrupted_by_the_header_timeout(
        self, make_server: Any
    ) -> None:
        server = make_server(header_timeout=0.3)
        errors: list[tuple[int, str]] = []

        def on_client_error(error: Any, sock: Any) -> None:
            errors.append((error.status, error.code))
            gevent.sleep(0.6)  # a slow log sink, say: past the header timeout
            sock.sendall(b"HTTP/1.1 400 Custom\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")

        server.on("clientError", on_client_error)
        client = gevent_client(server)
        client.send(b"GET / HTTP/1.1\r\nbad header line\r\n\r\n")
        assert client.read_response()[0] == 400
        assert errors == [(400, "HPE_INVALID_HEADER_TOKEN")]  # once: no 408 on top

    def test_an_oversized_request_line_goes_to_client_error_too(self, make_server: Any) -> None:
        server = make_server()
        errors: list[tuple[int, str]] = []

        def on_client_error(error: Any, sock: Any) -> None:
            errors.append((error.status, error.code))
            sock.sendall(b"HTTP/1.1 414 Custom\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")

        server.on("clientError", on_client_error)
        client = gevent_client(server)
        client.send(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.read_response()[0] == 414
        assert errors == [(414, "HPE_HEADER_OVERFLOW")]


class TestLimits:
    def test_max_connections_counts_open_websockets(self, make_server: Any) -> None:
        server = make_server(max_connections=2)
        server.on("upgrade", echo_listener)
        clients = []
        for _ in range(2):
            client = gevent_client(server)
            client.send(handshake_request())
            assert client.read_response()[0] == 101
            clients.append(client)
        refused = gevent_client(server)
        status, _, body = refused.read_response()
        assert status == 503 and b"Too many connections" in body
        clients[0].send(client_frame(CLOSE, (1000).to_bytes(2, "big")))
        assert clients[0].read_close() == (1000, "")
        assert clients[0].at_eof()
        welcome = gevent_client(server)
        welcome.send(handshake_request())
        assert welcome.read_response()[0] == 101


class TestClose:
    def test_close_sends_1001_to_every_open_websocket(self) -> None:
        server = start_server(EXAMPLES / "echo.py", "--idle-timeout", "0")
        clients = []
        try:
            for _ in range(100):
                client = RawClient(server.port)
                client.send(handshake_request())
                clients.append(client)
            for client in clients:
                assert client.read_response()[0] == 101
            server.process.terminate()  # SIGTERM: server.close()
            for client in clients:
                assert client.read_close() == (1001, "Server shutting down")
                client.send(client_frame(CLOSE, (1001).to_bytes(2, "big")))
            for client in clients:
                assert client.at_eof()
            assert server.process.wait(10) == 0
        finally:
            for client in clients:
                client.close()
            server.stop()

    @staticmethod
    def blocking_app(entered: gevent.event.Event, release: gevent.event.Event) -> Any:
        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            if environ["PATH_INFO"] == "/slow":
                entered.set()
                release.wait(30)
            start_response("200 OK", [("Content-Length", "2")])
            return [b"ok"]

        return app

    def test_idle_keep_alive_connections_are_closed_at_once(self, make_server: Any) -> None:
        server = make_server(self.blocking_app(gevent.event.Event(), gevent.event.Event()))
        client = gevent_client(server)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.read_response()[:3:2] == (200, b"ok")
        closer = gevent.spawn(server.close, 10)
        assert client.at_eof(5)  # not after header_timeout (60 s) nor close's 10 s
        closer.get(timeout=5)
        assert not server._handlers

    def test_a_request_in_progress_finishes_then_its_connection_closes(self, make_server: Any) -> None:
        entered, release = gevent.event.Event(), gevent.event.Event()
        server = make_server(self.blocking_app(entered, release))
        client = gevent_client(server)
        client.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert entered.wait(5)
        closer = gevent.spawn(server.close, 10)
        gevent.idle()
        assert not closer.ready()  # close() waits for the request
        release.set()
        assert client.read_response()[:3:2] == (200, b"ok")
        assert client.at_eof(5)  # kept alive no more: the server is closing
        closer.get(timeout=5)

    def test_close_called_from_a_request_does_not_wait_for_it(self, make_server: Any) -> None:
        # An admin view that shuts the server down: close() must not wait for the
        # request it runs in, nor cut that request's connection.
        server: Any = None
        took: list[float] = []

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            started = time.monotonic()
            server.close(timeout=5)
            took.append(time.monotonic() - started)
            start_response("200 OK", [("Content-Length", "3")])
            return [b"bye"]

        server = make_server(app)
        client = gevent_client(server)
        client.send(b"GET /shutdown HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.read_response()[:3:2] == (200, b"bye")
        assert client.at_eof(5)
        assert took and took[0] < 2

    def test_a_request_past_the_timeout_has_its_connection_cut(self, make_server: Any) -> None:
        entered = gevent.event.Event()
        release = gevent.event.Event()
        server = make_server(self.blocking_app(entered, release))
        client = gevent_client(server)
        client.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert entered.wait(5)
        closer = gevent.spawn(server.close, 0.3)
        closer.get(timeout=5)
        assert client.at_eof(5)
        release.set()


class TestInApp:
    @pytest.fixture
    def flask_server(self, make_server: Any) -> Server:
        app = Flask(__name__)

        @app.route("/ws", websocket=True)
        def ws() -> Any:
            sock, response = upgrade_websocket(flask_request)
            sock.onmessage = lambda event: sock.send(event.data)
            return response

        @app.route("/forgot", websocket=True)
        def forgot() -> Any:
            upgrade_websocket(flask_request)
            return "not the upgrade response"

        @app.route("/read-body", websocket=True)
        def read_body() -> Any:
            flask_request.get_data()
            return upgrade_websocket(flask_request).response

        server: Server = make_server(app.wsgi_app)
        return server

    def test_echo_and_head_bytes(self, flask_server: Server) -> None:
        client = gevent_client(flask_server)
        client.send(handshake_request("/ws") + client_frame(TEXT, b"in the same packet"))
        status, headers, _ = client.read_response()
        assert status == 101 and "content-type" not in headers
        assert client.read_frame() == (TEXT, True, b"in the same packet")

    def test_bad_handshakes_get_their_status_from_flask(self, flask_server: Server) -> None:
        client = gevent_client(flask_server)
        client.send(handshake_request("/ws", headers={"Sec-WebSocket-Version": "8"}))
        status, headers, body = client.read_response()
        assert status == 426 and headers["sec-websocket-version"] == "13"
        assert b"version 13" in body

    def test_a_view_that_returns_another_response_is_logged_and_closed(
        self, flask_server: Server, caplog: pytest.LogCaptureFixture
    ) -> None:
        client = gevent_client(flask_server)
        with caplog.at_level(logging.ERROR, logger="takeover"):
            client.send(handshake_request("/forgot"))
            status, _, body = client.read_response()
            assert (status, body) == (200, b"not the upgrade response")
            assert client.at_eof()
        assert caplog.messages.count("Upgrade response was not returned from callback") == 1

    def test_a_read_body_cannot_be_upgraded(self, flask_server: Server) -> None:
        client = gevent_client(flask_server)
        client.send(handshake_request("/read-body"))
        status, _, body = client.read_response()
        assert status == 400 and b"disturbed" in body


def test_keep_alive_two_requests_then_an_upgrade(make_server: Any) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = make_server(app)
    server.on("upgrade", echo_listener)
    client = gevent_client(server)
    for _ in range(2):
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = client.read_response()
        assert (status, body) == (200, b"ok")
    client.send(handshake_request() + client_frame(TEXT, b"third"))
    assert client.read_response()[0] == 101
    assert client.read_frame() == (TEXT, True, b"third")
