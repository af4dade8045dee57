"""takeover.WebSocket and upgrade_websocket, in-process on gevent with raw clients."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import gevent.socket
import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from takeover import (
    ConnectionClosed,
    HandshakeError,
    InvalidStateError,
    WebSocket,
    upgrade_websocket,
)
from takeover.server import Server
from takeover.upgrade import ENVIRON_KEY, complete_upgrade, pending_upgrade
from tests.clients import RawClient, handshake_request
from tests.frames import client_frame
from tests.io.waiting import holds_within, wait_until

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
Listener = Callable[[Request, Any, bytes], None]


def on_upgrade(server: Server, listener: Listener) -> None:
    server.on("upgrade", listener)


def open_client(server: Server, request: bytes | None = None) -> RawClient:
    client = RawClient(server.address[1], connect=gevent.socket.create_connection)
    client.send(request or handshake_request())
    return client


def upgraded(server: Server, **options: Any) -> tuple[gevent.event.AsyncResult, RawClient]:
    """Connect a client; the result is the server's WebSocket."""
    result = gevent.event.AsyncResult()

    def listener(request: Request, sock: Any, head: bytes) -> None:
        ws, _ = upgrade_websocket(request, socket=sock, head=head, **options)
        result.set(ws)

    on_upgrade(server, listener)
    client = open_client(server)
    assert client.read_response()[0] == 101
    return result, client


class Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.closed = gevent.event.Event()

    def attach(self, ws: WebSocket) -> None:
        for kind in ("open", "message", "error", "close"):
            ws.add_event_listener(kind, self.record)

    def record(self, event: Any) -> None:
        self.events.append(event)
        if event.type == "close":
            self.closed.set()

    def types(self) -> list[str]:
        return [event.type for event in self.events]


class TestSocketMode:
    def test_listeners_added_after_the_call_see_open(self, server: Server) -> None:
        recorder = Recorder()
        seen: dict[str, Any] = {}

        def listener(request: Request, sock: Any, head: bytes) -> None:
            ws, response = upgrade_websocket(request, socket=sock, head=head)
            seen["status"] = response.status_code
            seen["state"] = ws.ready_state
            try:
                ws.send("too early")
            except InvalidStateError as error:
                seen["send_error"] = str(error)
            recorder.attach(ws)
            ws.onmessage = lambda event: ws.send(event.data)
            seen["ws"] = ws

        on_upgrade(server, listener)
        client = open_client(server)
        status, headers, _ = client.read_response()
        assert status == 101 and headers["upgrade"] == "websocket"
        client.send(client_frame(TEXT, b"hi"))
        assert client.read_frame() == (TEXT, True, b"hi")
        assert seen["status"] == 101
        assert seen["state"] == WebSocket.CONNECTING
        assert "CONNECTING" in seen["send_error"]
        assert seen["ws"].ready_state == WebSocket.OPEN
        assert seen["ws"].url == "ws://127.0.0.1/"
        assert seen["ws"].remote_address == client.sock.getsockname()
        client.send(client_frame(CLOSE, (1000).to_bytes(2, "big") + b"bye"))
        assert client.read_close() == (1000, "")
        assert recorder.closed.wait(5)
        assert recorder.types() == ["open", "message", "close"]
        close = recorder.events[-1]
        assert (close.code, close.reason, close.was_clean) == (1000, "bye", True)
        assert seen["ws"].ready_state == WebSocket.CLOSED

    def test_a_second_upgrade_of_the_socket_fails(self, server: Server) -> None:
        errors: list[str] = []

        def listener(request: Request, sock: Any, head: bytes) -> None:
            upgrade_websocket(request, socket=sock, head=head)
            try:
                upgrade_websocket(request, socket=sock, head=head)
            except InvalidStateError as error:
                errors.append(str(error))

        on_upgrade(server, listener)
        client = open_client(server)
        assert client.read_response()[0] == 101
        assert errors == ["Socket has already been upgraded to a WebSocket"]

    def test_a_closed_socket_cannot_be_upgraded(self, server: Server) -> None:
        errors: list[str] = []

        def listener(request: Request, sock: Any, head: bytes) -> None:
            sock.close()
            try:
                upgrade_websocket(request, socket=sock, head=head)
            except InvalidStateError as error:
                errors.append(str(error))

        on_upgrade(server, listener)
        client = open_client(server)
        assert client.at_eof()
        assert errors == ["Socket is already destroyed - cannot upgrade to WebSocket"]

    def test_handshake_error_in_a_listener_is_answered(self, server: Server) -> None:
        def listener(request: Request, sock: Any, head: bytes) -> None:
            ws, _ = upgrade_websocket(request, socket=sock, head=head, protocol="graphql-ws")
            ws.onmessage = lambda event: ws.send(event.data)

        on_upgrade(server, listener)
        client = open_client(server, handshake_request(headers={"Sec-WebSocket-Protocol": "chat"}))
        status, _, body = client.read_response()
        assert status == 400
        assert body == b"Protocol 'graphql-ws' not in the request's protocol list (non negotiable)"
        assert client.at_eof()
        good = open_client(server, handshake_request(headers={"Sec-WebSocket-Protocol": "x, graphql-ws"}))
        status, headers, _ = good.read_response()
        assert status == 101 and headers["sec-websocket-protocol"] == "graphql-ws"

    def test_an_exception_in_an_upgrade_listener_closes_only_that_socket(
        self, server: Server, caplog: pytest.LogCaptureFixture
    ) -> None:
        calls = []

        def listener(request: Request, sock: Any, head: bytes) -> None:
            calls.append(request.path)
            if request.path == "/boom":
                raise RuntimeError("listener bug")
            ws, _ = upgrade_websocket(request, socket=sock, head=head)
            ws.onmessage = lambda event: ws.send(event.data)

        on_upgrade(server, listener)
        with caplog.at_level(logging.ERROR, logger="takeover"):
            bad = open_client(server, handshake_request("/boom"))
            assert bad.at_eof()
        assert "Exception in a listener of 'upgrade'" in caplog.text
        good = open_client(server, handshake_request("/ok") + client_frame(TEXT, b"fine"))
        assert good.read_response()[0] == 101
        assert good.read_frame() == (TEXT, True, b"fine")
        assert calls == ["/boom", "/ok"]


class TestEvents:
    def test_pings_are_answered_with_the_same_payload(self, server: Server) -> None:
        _, client = upgraded(server)
        client.send(client_frame(PING, b"are you there"))
        assert client.read_frame() == (PONG, True, b"are you there")

    def test_a_protocol_error_dispatches_error_then_close(self, server: Server) -> None:
        result, client = upgraded(server)
        recorder = Recorder()
        recorder.attach(result.get(timeout=5))
        client.send(client_frame(TEXT, b"\xc3\x28"))
        assert client.read_close()[0] == 1007
        client.send(client_frame(CLOSE, (1007).to_bytes(2, "big")))
        assert recorder.closed.wait(5)
        assert recorder.types() == ["error", "close"]
        assert recorder.events[-1].code == 1007 and not recorder.events[-1].was_clean

    def test_a_vanished_client_dispatches_error_and_close_once(self, server: Server) -> None:
        result, client = upgraded(server)
        recorder = Recorder()
        recorder.attach(result.get(timeout=5))
        client.close()
        assert recorder.closed.wait(5)
        # A duplicate dispatch would come right after: this wait for one is expected to time out.
        assert not holds_within(lambda: len(recorder.events) > 2, 0.05), recorder.types()
        assert recorder.types() == ["error", "close"]
        assert recorder.events[-1].code == 1006 and not recorder.events[-1].was_clean

    def test_a_listener_that_raises_is_logged_and_the_others_run(
        self, server: Server, caplog: pytest.LogCaptureFixture
    ) -> None:
        result, client = upgraded(server)
        ws = result.get(timeout=5)

        def broken(event: Any) -> None:
            raise ValueError("listener bug")

        ws.add_event_listener("message", broken)
        ws.add_event_listener("message", lambda event: ws.send(event.data))
        with caplog.at_level(logging.ERROR, logger="takeover"):
            client.send(client_frame(TEXT, b"one") + client_frame(TEXT, b"two"))
            assert client.read_frame() == (TEXT, True, b"one")
            assert client.read_frame() == (TEXT, True, b"two")
        assert [r.exc_info[1].args for r in caplog.records if r.exc_info] == [("listener bug",)] * 2

    def test_once_and_remove_event_listener(self, server: Server) -> None:
        result, client = upgraded(server)
        ws = result.get(timeout=5)
        once: list[Any] = []
        removed: list[Any] = []
        ws.add_event_listener("message", once.append, once=True)
        ws.add_event_listener("message", removed.append)
        ws.remove_event_listener("message", removed.append)
        ws.add_event_listener("message", lambda event: ws.send(event.data))
        client.send(client_frame(TEXT, b"a") + client_frame(TEXT, b"b"))
        assert client.read_frame()[2] == b"a" and client.read_frame()[2] == b"b"
        assert [event.data for event in once] == ["a"]
        assert removed == []

    def test_on_attributes_keep_their_first_place_and_none_removes(self) -> None:
        ws = WebSocket(handshake_response=b"")
        order: list[str] = []
        ws.add_event_listener("message", lambda event: order.append("first"))
        ws.onmessage = lambda event: order.append("handler-1")
        ws.add_event_listener("message", lambda event: order.append("last"))
        ws.onmessage = lambda event: order.append("handler-2")
        ws.dispatch_event(_message("x"))
        assert order == ["first", "handler-2", "last"]
        ws.onmessage = None
        assert ws.onmessage is None
        order.clear()
        ws.dispatch_event(_message("x"))
        assert order == ["first", "last"]

    def test_binary_type_bytearray(self, server: Server) -> None:
        result, client = upgraded(server)
        ws = result.get(timeout=5)
        ws.binary_type = "bytearray"
        got = gevent.event.AsyncResult()
        ws.onmessage = lambda event: got.set(event.data)
        client.send(client_frame(BINARY, b"\x01\x02"))
        assert got.get(timeout=5) == bytearray(b"\x01\x02")
        assert type(got.get()) is bytearray


def _message(data: str) -> Any:
    from takeover import MessageEvent

    return MessageEvent(data)


class TestClose:
    @pytest.mark.parametrize(
        ("code", "reason"),
        [(999, ""), (1004, ""), (1005, ""), (1006, ""), (1015, ""), (2999, ""), (5000, ""), (1000, "x" * 124),
         (4000, "é" * 62)],
    )
    def test_invalid_codes_and_long_reasons_raise_value_error(self, code: int, reason: str) -> None:
        ws = WebSocket(handshake_response=b"")
        with pytest.raises(ValueError):
            ws.close(code, reason)

    def test_server_initiated_close_handshake(self, server: Server) -> None:
        result, client = upgraded(server)
        ws = result.get(timeout=5)
        recorder = Recorder()
        recorder.attach(ws)
        ws.close(4000, "done")
        assert ws.ready_state == WebSocket.CLOSING
        assert client.read_close() == (4000, "done")
        client.send(client_frame(CLOSE, (4000).to_bytes(2, "big")))
        assert recorder.closed.wait(5)
        close = recorder.events[-1]
        assert (close.code, close.was_clean) == (4000, True)
        assert client.at_eof()
        ws.send("after close is discarded")  # the DOM discards, it does not raise

    def test_close_timeout_when_the_client_never_answers(self, server: Server) -> None:
        result, client = upgraded(server, close_timeout=0.3)
        ws = result.get(timeout=5)
        recorder = Recorder()
        recorder.attach(ws)
        ws.close(1000)
        assert client.read_close() == (1000, "")
        assert recorder.closed.wait(5)
        close = recorder.events[-1]
        assert (close.code, close.was_clean) == (1006, False)
        assert client.at_eof()


class TestBlockingApi:
    def test_receive_and_iteration(self, server: Server) -> None:
        outcome: dict[str, Any] = {}
        timed_out = gevent.event.Event()
        returned = gevent.event.Event()

        def listener(request: Request, sock: Any, head: bytes) -> None:
            try:
                ws, _ = upgrade_websocket(request, socket=sock, head=head)
                try:
                    ws.receive(timeout=0.05)
                except TimeoutError:
                    outcome["timeout"] = True
                    timed_out.set()
                for message in ws:
                    ws.send(message.upper() if isinstance(message, str) else message)
                try:
                    ws.receive()
                except ConnectionClosed as closed:
                    outcome["closed"] = (closed.code, closed.reason)
            finally:
                returned.set()

        on_upgrade(server, listener)
        client = open_client(server)
        assert client.read_response()[0] == 101
        # receive(timeout=0.05) times out before anything arrives.
        assert timed_out.wait(5), f"receive(timeout=0.05) did not time out: {outcome}"
        client.send(client_frame(TEXT, b"abc") + client_frame(BINARY, b"\x00"))
        assert client.read_frame() == (TEXT, True, b"ABC")
        assert client.read_frame() == (BINARY, True, b"\x00")
        client.send(client_frame(CLOSE, (4002).to_bytes(2, "big") + b"end"))
        assert client.read_close() == (4002, "")
        assert client.at_eof()
        assert returned.wait(5), "the listener did not return after the close"
        assert outcome == {"timeout": True, "closed": (4002, "end")}


class TestResponseModeHook:
    def test_nothing_is_written_until_a_server_completes_the_upgrade(self) -> None:
        environ = EnvironBuilder(path="/chat", headers=_upgrade_headers()).get_environ()
        ws, response = upgrade_websocket(Request(environ))
        assert response.status_code == 101
        assert response.headers["Sec-WebSocket-Accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3
        assert "Content-Type" not in response.headers
        assert environ[ENVIRON_KEY] is ws and pending_upgrade(environ) is ws
        assert ws.ready_state == WebSocket.CONNECTING
        ws.onmessage = lambda event: ws.send(event.data)
        ours, theirs = gevent.socket.socketpair()
        complete_upgrade(environ, ours, head=client_frame(TEXT, b"from head"))
        client = RawClient(0, connect=lambda *args, **kwargs: theirs)
        assert client.read_response()[0] == 101
        assert client.read_frame() == (TEXT, True, b"from head")
        assert pending_upgrade(environ) is None
        with pytest.raises(InvalidStateError):
            complete_upgrade(environ, ours)

    def test_a_disturbed_body_cannot_be_upgraded(self) -> None:
        environ = EnvironBuilder(path="/", headers=_upgrade_headers(), data=b"x").get_environ()
        environ["REQUEST_METHOD"] = "GET"
        request = Request(environ)
        request.get_data()
        with pytest.raises(HandshakeError, match="disturbed"):
            upgrade_websocket(request)


def _upgrade_headers() -> dict[str, str]:
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }


def test_plain_sockets_live_in_the_io_loop() -> None:
    """A non-gevent socket, from a plain thread (a threaded server's), lives in takeover's I/O loop."""
    ours, theirs = socket.socketpair()
    environ = EnvironBuilder(path="/", headers=_upgrade_headers()).get_environ()
    # In the I/O loop the session starts at once, so messages that arrive before
    # a listener is set are queued for receive(): the head goes there.
    ws, _ = upgrade_websocket(environ, socket=ours, head=client_frame(TEXT, b"head"))
    assert ws.receive(timeout=5) == "head"
    ws.onmessage = lambda event: ws.send(event.data)
    client = RawClient(0, connect=lambda *args, **kwargs: theirs)
    assert client.read_response()[0] == 101
    client.send(client_frame(TEXT, b"text"))
    assert client.read_frame() == (TEXT, True, b"text")
    client.send(client_frame(BINARY, b"thread"))
    assert client.read_frame() == (BINARY, True, b"thread")
    closed = threading.Event()
    ws.onclose = lambda event: closed.set()
    client.send(client_frame(CLOSE, b""))
    assert client.read_close() == (None, "")
    assert closed.wait(5)
    from takeover._io.loop import io_loop

    assert ws.session.loop is io_loop()


def test_one_log_line_per_upgrade_and_per_close(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="takeover.access"):
        result, client = upgraded(server)
        ws = result.get(timeout=5)
        closed = gevent.event.Event()
        ws.onclose = lambda event: closed.set()
        client.send(client_frame(CLOSE, (4000).to_bytes(2, "big")))
        assert closed.wait(5)
    lines = [record.getMessage() for record in caplog.records if record.name == "takeover.access"]
    assert len(lines) == 2
    assert lines[0].startswith("WebSocket open / peer=127.0.0.1:")
    assert lines[1].startswith("WebSocket closed / peer=127.0.0.1:") and " code=4000 duration=" in lines[1]
    assert not any(record.exc_info for record in caplog.records)


def test_broadcast_frames_once_for_every_open_socket(server: Server) -> None:
    from takeover import broadcast

    sockets: list[WebSocket] = []

    def listener(request: Request, sock: Any, head: bytes) -> None:
        sockets.append(upgrade_websocket(request, socket=sock, head=head).socket)

    on_upgrade(server, listener)
    clients = [open_client(server) for _ in range(3)]
    for client in clients:
        assert client.read_response()[0] == 101
    sockets[2].close(1000)
    assert clients[2].read_close() == (1000, "")
    assert broadcast(sockets, "to all") == 2
    assert broadcast(sockets[:1], b"\x00") == 1
    assert clients[0].read_frame() == (TEXT, True, b"to all")
    assert clients[0].read_frame() == (BINARY, True, b"\x00")
    assert clients[1].read_frame() == (TEXT, True, b"to all")


def test_a_full_receive_queue_pauses_reading_without_idle_close_or_loss(server: Server) -> None:
    result, client = upgraded(server, max_queue=2, idle_timeout=0.4)
    ws = result.get(timeout=5)
    client.send(b"".join(client_frame(TEXT, str(index).encode()) for index in range(5)))
    client.send(client_frame(CLOSE, (1000).to_bytes(2, "big")))
    # Nobody calls receive() for three idle timeouts: the silence is the
    # server's own (backpressure), so no ping and no 1001 may go out. The
    # client reads for that long: the duration is the subject of the test.
    client.sock.settimeout(1.25)
    with pytest.raises(TimeoutError):
        client.read_frame()
    assert [ws.receive(timeout=5) for _ in range(5)] == ["0", "1", "2", "3", "4"]
    with pytest.raises(ConnectionClosed) as closed:
        ws.receive(timeout=5)
    assert closed.value.code == 1000


def test_an_idle_reader_parks_and_wakes_up_for_the_next_message(server: Server) -> None:
    result, client = upgraded(server, idle_timeout=0)
    ws = result.get(timeout=5)
    ws.onmessage = lambda event: ws.send(event.data)
    client.send(client_frame(TEXT, b"before"))
    assert client.read_frame() == (TEXT, True, b"before")
    # The reader parks between one and two PARK_AFTER (0.5 s) without data.
    wait_until(lambda: ws.session.transport._parked, timeout=5, what="the idle reader to park")
    assert ws.session.transport._parked, "the idle reader did not park"
    client.send(client_frame(TEXT, b"after"))
    assert client.read_frame() == (TEXT, True, b"after")
    assert not ws.session.transport._parked


def test_a_closed_websocket_is_freed_without_the_garbage_collector(server: Server) -> None:
    import gc
    import weakref


    references: list[weakref.ref[WebSocket]] = []
    closed = gevent.event.Event()
    freed = gevent.event.Event()

    def listener(request: Request, sock: Any, head: bytes) -> None:
        ws, _ = upgrade_websocket(request, socket=sock, head=head)
        ws.onmessage = lambda event: ws.send(event.data)  # a cycle through the listener
        ws.add_event_listener("close", lambda event: closed.set())
        references.append(weakref.ref(ws, lambda reference: freed.set()))

    on_upgrade(server, listener)
    client = open_client(server)
    assert client.read_response()[0] == 101
    client.send(client_frame(CLOSE, (1000).to_bytes(2, "big")))
    assert closed.wait(5)
    gc.disable()  # refcounting alone must free it: no registry entry, no cycle left
    try:
        # Once the session's greenlet has ended; the weak reference's callback says when.
        assert freed.wait(5), "the WebSocket outlived its connection"
        assert references[0]() is None, "the WebSocket outlived its connection"
    finally:
        gc.enable()
