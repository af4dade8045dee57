"""gevent-websocket applications on gevent-websocket's handler and on ``takeover.legacy``.

Three apps written for gevent-websocket (``tests/servers/apps/legacy/``): an
environ echo app as its documentation shows, a ``WebSocketApplication`` chat
routed by ``Resource`` that broadcasts through ``ws.handler.server.clients``
and keeps nicknames on ``handler.active_client``, and a sender that never
receives, like gevent-websocket's plot example. Each runs as its own process,
once on ``geventwebsocket.handler.WebSocketHandler`` and once on
``takeover.legacy.WebSocketHandler`` (the only line that differs), and the
same real clients (the ``websockets`` client, raw sockets) check them.

Every behaviour is either the same on both, or asserted per handler where
gevent-websocket 0.10.1 is wrong (``docs/guides/legacy.rst`` lists those).
Last, the echo app and the sender are served by gunicorn with
``takeover.legacy.gunicorn.LegacyWorker`` (also importable as
``takeover.gunicorn.LegacyWorker``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from geventwebsocket.exceptions import WebSocketError
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.clients import RawClient, handshake_request
from tests.frames import client_frame
from tests.paths import APPS, ROOT
from tests.processes import OutputLines, ServerProcess, free_port, start_server, stop_process

LEGACY = APPS / "legacy"
HANDLERS = ["geventwebsocket", "takeover"]
LIMIT = 4 * 1024 * 1024  # takeover's max_message_size in the echo server (gevent-websocket has none)
MIB = 1024 * 1024

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


@pytest.fixture(scope="module", params=HANDLERS)
def echo(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    extra = ["--max-message-size", str(LIMIT)] if request.param == "takeover" else []
    server = start_server(LEGACY / "echo_app.py", "--handler", request.param, *extra)
    server.handler = request.param  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture(scope="module", params=HANDLERS)
def chat(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    server = start_server(LEGACY / "chat_app.py", "--handler", request.param)
    server.handler = request.param  # type: ignore[attr-defined]
    yield server
    server.stop()


def is_takeover(server: ServerProcess) -> bool:
    return bool(server.handler == "takeover")  # type: ignore[attr-defined]


def opened(server: ServerProcess, path: str = "/echo", extra: bytes = b"") -> RawClient:
    """A raw client past the 101 (``extra`` goes in the handshake's packet)."""
    client = RawClient(server.port)
    client.send(handshake_request(path) + extra)
    status, _, _ = client.read_response()
    assert status == 101
    return client


def raw_close(client: RawClient) -> bytes:
    """The payload of the next close frame (other frames skipped)."""
    for _ in range(100):
        opcode, _, payload = client.read_frame()
        if opcode == CLOSE:
            return payload
    raise AssertionError("no close frame")


# -- the echo app: the same on both handlers ------------------------------------


def test_text_and_binary_echo(echo: ServerProcess) -> None:
    with connect(echo.url + "echo") as ws:
        ws.send("héllo wörld")
        assert ws.recv(timeout=5) == "héllo wörld"
        ws.send(b"\x00\x01\x02\xff")
        assert ws.recv(timeout=5) == b"\x00\x01\x02\xff"
        for index in range(50):
            ws.send(f"message {index}")
        assert [ws.recv(timeout=5) for _ in range(50)] == [f"message {index}" for index in range(50)]


def test_receive_types_and_properties(echo: ServerProcess) -> None:
    # receive() gives bytearray for binary and str for text; path, origin, wsgi.websocket_version.
    with connect(echo.url + "info", origin="http://example.test") as ws:  # type: ignore[arg-type]
        ws.send(b"binary")
        assert ws.recv(timeout=5) == "bytearray /info http://example.test 13"
    with connect(echo.url + "info") as ws:
        ws.send("text")
        assert ws.recv(timeout=5) == "str /info None 13"


def test_one_mib_message(echo: ServerProcess) -> None:
    payload = os.urandom(MIB)
    with connect(echo.url + "echo", max_size=None) as ws:
        ws.send(payload)
        assert ws.recv(timeout=30) == payload
        ws.send("ok")
        assert ws.recv(timeout=5) == "ok"


def test_fragments_and_ping(echo: ServerProcess) -> None:
    client = opened(echo)
    try:
        client.send(client_frame(TEXT, b"frag", fin=False) + client_frame(0x0, b"mented"))
        assert client.read_frame() == (TEXT, True, b"fragmented")
        client.send(client_frame(PING, b"are you there"))
        assert client.read_frame() == (PONG, True, b"are you there")
    finally:
        client.close()


def test_empty_messages(echo: ServerProcess) -> None:
    # The issue lists empty messages as a gevent-websocket defect; 0.10.1 echoes them
    # (measured here), and so does takeover.
    with connect(echo.url + "echo") as ws:
        ws.send("")
        assert ws.recv(timeout=5) == ""
        ws.send(b"")
        assert ws.recv(timeout=5) == b""
        ws.send("after")
        assert ws.recv(timeout=5) == "after"


def test_head_bytes(echo: ServerProcess) -> None:
    # The handshake and the first frame in one packet: both answer (gevent-websocket
    # reads frames through the handler's buffered reader; takeover passes ``head``).
    client = opened(echo, extra=client_frame(TEXT, b"first") + client_frame(BINARY, b"second"))
    try:
        assert client.read_frame() == (TEXT, True, b"first")
        assert client.read_frame() == (BINARY, True, b"second")
    finally:
        client.close()


def test_plain_http(echo: ServerProcess) -> None:
    client = RawClient(echo.port)
    try:
        client.send(b"GET /page HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, _, body = client.read_response()
        assert (status, body) == (200, b"plain HTTP: /page\n")
        client.send(b"GET /again HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # keep-alive
        assert client.read_response()[2] == b"plain HTTP: /again\n"
    finally:
        client.close()


def test_client_close_ends_the_app(echo: ServerProcess) -> None:
    with connect(echo.url + "echo") as ws:
        ws.send("one")
        assert ws.recv(timeout=5) == "one"
    # The app saw receive() return None and returned: the server still serves.
    with connect(echo.url + "echo") as ws:
        ws.send("two")
        assert ws.recv(timeout=5) == "two"


# -- close codes: gevent-websocket never sends one --------------------------------


def test_client_close_answered(echo: ServerProcess) -> None:
    client = opened(echo)
    try:
        client.send(client_frame(CLOSE, (1000).to_bytes(2, "big") + b"bye"))
        payload = raw_close(client)
        if is_takeover(echo):
            assert payload == (1000).to_bytes(2, "big")  # the code echoed (RFC 6455 §5.5.1)
        else:
            assert payload == b"bytearray(b'bye')"  # the reason's repr where the code belongs
        assert client.at_eof()
    finally:
        client.close()


def test_client_close_without_reason(echo: ServerProcess) -> None:
    client = opened(echo)
    try:
        client.send(client_frame(CLOSE, (4321).to_bytes(2, "big")))
        payload = raw_close(client)
        assert payload == ((4321).to_bytes(2, "big") if is_takeover(echo) else b"")
        assert client.at_eof()
    finally:
        client.close()


def test_server_close_code_and_reason(echo: ServerProcess) -> None:
    # The app calls ws.close(4001, b"bye").
    with connect(echo.url + "close?code=4001&reason=bye") as ws:
        ws.send("close now")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        received = closed.value.rcvd
        if is_takeover(echo):
            assert received is not None
            assert (received.code, received.reason) == (4001, "bye")
        else:
            assert received is None or received.code != 4001  # no valid close frame
    client = opened(echo, "/close?code=4001&reason=bye")
    try:
        client.send(client_frame(TEXT, b"close now"))
        payload = raw_close(client)
        if is_takeover(echo):
            assert payload == (4001).to_bytes(2, "big") + b"bye"
            client.send(client_frame(CLOSE, payload[:2]))
        else:
            assert payload == b"b'bye'"  # the reason's repr, no code
        assert client.at_eof()
    finally:
        client.close()


# -- where gevent-websocket was wrong: asserted per handler ------------------------


def test_unmasked_frame(echo: ServerProcess) -> None:
    client = opened(echo)
    try:
        client.send(client_frame(TEXT, b"unmasked", mask=None))
        if is_takeover(echo):
            payload = raw_close(client)
            assert int.from_bytes(payload[:2], "big") == 1002
        else:
            assert client.read_frame() == (TEXT, True, b"unmasked")  # accepted (RFC 6455 §5.1: must close)
    finally:
        client.close()


def test_invalid_utf8(echo: ServerProcess) -> None:
    client = opened(echo)
    try:
        client.send(client_frame(TEXT, b"bad \xff\xfe utf-8"))
        payload = raw_close(client)
        if is_takeover(echo):
            assert int.from_bytes(payload[:2], "big") == 1007
        else:
            assert payload == b""  # a close frame without the 1007 code
    finally:
        client.close()


def test_message_over_the_size_limit(echo: ServerProcess) -> None:
    payload = b"\x00" * (LIMIT + 1)
    client = opened(echo)
    try:
        client.send(client_frame(BINARY, payload, mask=b"\x00\x00\x00\x00"))
        if is_takeover(echo):
            close = raw_close(client)
            assert int.from_bytes(close[:2], "big") == 1009
        else:
            opcode, _, echoed = client.read_frame()  # no limit at all
            assert (opcode, len(echoed)) == (BINARY, LIMIT + 1)
    finally:
        client.close()


def test_app_exception(echo: ServerProcess) -> None:
    client = opened(echo, "/raise")
    try:
        client.send(client_frame(TEXT, b"boom"))
        payload = raw_close(client)
        if is_takeover(echo):
            assert int.from_bytes(payload[:2], "big") == 1011
        else:
            assert payload == b""  # then the 500 page gevent writes after the close frame
        client.send(client_frame(CLOSE, payload[:2]))
        assert client.at_eof()
    finally:
        client.close()


@pytest.mark.parametrize(
    ("request_bytes", "takeover_status", "gevent_websocket_status"),
    [
        pytest.param(handshake_request("/echo", headers={"Sec-WebSocket-Version": "8"}), 426, 101, id="v8"),
        pytest.param(
            handshake_request("/echo", headers={"Sec-WebSocket-Key": "short"}), 400, 500, id="bad-key"
        ),
        pytest.param(handshake_request("/echo", version="HTTP/1.0"), 400, 402, id="http-1.0"),
        pytest.param(handshake_request("/echo", method="POST"), 405, 200, id="post"),
        pytest.param(handshake_request("/echo", omit=("Sec-WebSocket-Version",)), 400, 426, id="no-version"),
    ],
)
def test_handshake_validation(
    echo: ServerProcess, request_bytes: bytes, takeover_status: int, gevent_websocket_status: int
) -> None:
    client = RawClient(echo.port)
    try:
        client.send(request_bytes)
        status, _, _ = client.read_response()
        assert status == (takeover_status if is_takeover(echo) else gevent_websocket_status)
    finally:
        client.close()


# -- the WebSocketApplication chat with Resource routing ---------------------------


def join(chat: ServerProcess, stack: ExitStack) -> tuple[Any, list[Any]]:
    ws = stack.enter_context(connect(chat.url + "chat"))
    welcome = json.loads(ws.recv(timeout=5))
    assert welcome["type"] == "welcome"
    local = ws.socket.getsockname()
    assert welcome["address"] == [local[0], local[1]]  # handler.active_client.address
    return ws, welcome["address"]


def who(ws: Any) -> int:
    ws.send("who")
    answer = json.loads(ws.recv(timeout=5))
    assert answer["type"] == "who"
    return int(answer["count"])


def test_chat_broadcast(chat: ServerProcess) -> None:
    with ExitStack() as stack:
        clients = [join(chat, stack) for _ in range(3)]
        (alice, alice_address), (bob, _), (carol, _) = clients
        assert who(alice) == 3
        alice.send("hello, everyone")
        for ws, _ in clients:
            message = json.loads(ws.recv(timeout=5))
            assert message == {
                "type": "message", "from": alice_address, "nickname": "anonymous", "text": "hello, everyone"
            }
        bob.close()
        deadline = time.monotonic() + 5
        while who(alice) != 2:  # bob's entry leaves server.clients when his app returns
            assert time.monotonic() < deadline
            time.sleep(0.05)
        carol.send("bob has left")
        for ws in (alice, carol):
            assert json.loads(ws.recv(timeout=5))["text"] == "bob has left"


def test_chat_many_messages(chat: ServerProcess) -> None:
    with ExitStack() as stack:
        clients = [join(chat, stack) for _ in range(4)]
        senders = [ws for ws, _ in clients]
        for round_ in range(20):
            senders[round_ % 4].send(f"line {round_}")
        for ws in senders:
            texts = [json.loads(ws.recv(timeout=5))["text"] for _ in range(20)]
            assert sorted(texts) == sorted(f"line {index}" for index in range(20))


def test_chat_nicknames_on_active_client(chat: ServerProcess) -> None:
    # gevent-websocket's chat example: handler.active_client.nickname = ... and
    # getattr(client, "nickname", "anonymous") over server.clients.
    with ExitStack() as stack:
        (alice, alice_address), (bob, _), (carol, _) = [join(chat, stack) for _ in range(3)]
        alice.send("nick alice")
        assert json.loads(alice.recv(timeout=5)) == {
            "type": "clients", "nicknames": ["alice", "anonymous", "anonymous"]
        }
        bob.send("nick bob")
        assert json.loads(bob.recv(timeout=5))["nicknames"] == ["alice", "anonymous", "bob"]
        alice.send("nick alice2")  # set again: the attribute is replaced
        assert json.loads(alice.recv(timeout=5))["nicknames"] == ["alice2", "anonymous", "bob"]
        alice.send("hi")
        for ws in (alice, bob, carol):
            assert json.loads(ws.recv(timeout=5)) == {
                "type": "message", "from": alice_address, "nickname": "alice2", "text": "hi"
            }
        for ws in (alice, bob, carol):
            ws.close()
            # The server's answer to the client's close, not a 1011 (gevent-websocket's has no code).
            assert ws.close_code == (1000 if is_takeover(chat) else 1005)


def test_chat_resource_routes_plain_http(chat: ServerProcess) -> None:
    client = RawClient(chat.port)
    try:
        client.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, _, body = client.read_response()
        assert (status, body) == (200, b"chat: connect a WebSocket to /chat\n")
    finally:
        client.close()


# -- a sender that never receives (gevent-websocket's plot example) -----------------

#: How the client leaves: a close handshake, the end of the TCP stream without a
#: close frame, or a TCP reset; and the close code takeover reports for each.
LEAVING = {"close-frame": 1000, "eof": 1006, "reset": 1006}
SENDING = r"plot: sending to {peer}$"
SEND_FAILED = r"plot: send to {peer} failed after \d+ points: (.*)$"
RECEIVED = r"plot: then receive\(\) from {peer} gave (.*)$"


@dataclass
class Sender:
    server: ServerProcess
    out: OutputLines
    handler: str


@pytest.fixture(scope="module", params=HANDLERS)
def plot(request: pytest.FixtureRequest) -> Iterator[Sender]:
    server = start_server(LEGACY / "plot_app.py", "--handler", request.param)
    yield Sender(server, OutputLines(server.process.stdout), request.param)
    server.stop()


def peer_of(client: RawClient) -> str:
    """The client's address as the app prints it, made a regular expression."""
    host, port = client.sock.getsockname()[:2]
    return re.escape(f"{host}:{port}")


def leave(client: RawClient, how: str) -> None:
    """Disconnect the way ``how`` (a key of ``LEAVING``) says."""
    if how == "close-frame":
        client.send(client_frame(CLOSE, (1000).to_bytes(2, "big")))
        # Wait for the answering close as clients do, for at most a second (gevent-websocket
        # never reads, so never answers: then give up, as a client's close timeout would).
        deadline = time.monotonic() + 1
        for _ in range(10_000):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            client.sock.settimeout(remaining)
            try:
                if client.read_frame()[0] == CLOSE:
                    break
            except (TimeoutError, ConnectionError):
                break
    elif how == "reset":
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


@pytest.mark.parametrize("how", sorted(LEAVING))
def test_a_sender_gets_websocket_error_once_the_client_left(plot: Sender, how: str) -> None:
    """The app's ``send()`` raises ``WebSocketError`` within 2 s of the client leaving.

    gevent-websocket's does when the kernel reports the broken connection; takeover's
    once its reader has seen the close, the end of the stream or the reset, with the
    close code in the message. An application that only sends has no other way to
    learn that its client has gone.
    """
    client = opened(plot.server, "/data")
    try:
        peer = peer_of(client)
        assert plot.out.wait_for(SENDING.format(peer=peer), 10), plot.out.output
        assert client.read_frame()[0] == TEXT  # the data points are arriving
        leave(client, how)
        failed = plot.out.wait_for(SEND_FAILED.format(peer=peer), 2)
        assert failed is not None, f"no WebSocketError within 2 s of the client leaving:\n{plot.out.output}"
        if plot.handler == "takeover":
            assert failed.group(1) == f"Socket is dead: connection closed with code {LEAVING[how]}"
        else:
            assert failed.group(1) == "Socket is dead"
        # Then receive() returns None at once, as gevent-websocket's does on a dead socket.
        received = plot.out.wait_for(RECEIVED.format(peer=peer), 2)
        assert received is not None, f"receive() did not return within 2 s:\n{plot.out.output}"
        assert received.group(1) == "None"
    finally:
        client.close()


# -- gunicorn: takeover.gunicorn.LegacyWorker, as GeventWebSocketWorker ----------


def gunicorn_quiet_options() -> list[str]:
    """``--no-control-socket`` where gunicorn has one: no socket shared in ~/.gunicorn by the tests."""
    from gunicorn.config import KNOWN_SETTINGS

    return ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []


def test_gunicorn_legacy_worker() -> None:
    pytest.importorskip("gunicorn")
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", "-k", "takeover.gunicorn.LegacyWorker", "-w", "2",
        "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5", *gunicorn_quiet_options(),
        "--chdir", str(LEGACY), "echo_app:websocket_app",
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, process.communicate()[0].decode(errors="replace")
                assert time.monotonic() < deadline, "gunicorn did not listen"
                time.sleep(0.1)
        url = f"ws://127.0.0.1:{port}/echo"
        for _ in range(4):  # spread over both workers
            with connect(url, max_size=None) as ws:
                ws.send("over gunicorn")
                assert ws.recv(timeout=5) == "over gunicorn"
                payload = os.urandom(MIB)
                ws.send(payload)
                assert ws.recv(timeout=30) == payload
        client = RawClient(port)
        client.send(handshake_request("/echo") + client_frame(TEXT, b"head"))
        assert client.read_response()[0] == 101
        assert client.read_frame() == (TEXT, True, b"head")
        client.send(client_frame(TEXT, b"\xff"))
        assert int.from_bytes(raw_close(client)[:2], "big") == 1007
        client.close()
        plain = RawClient(port)
        plain.send(b"GET /page HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert plain.read_response()[2] == b"plain HTTP: /page\n"
        plain.close()
        # SIGTERM: an open WebSocket is closed with 1001 and gunicorn exits well within the timeout.
        with connect(url) as ws:
            ws.send("still here")
            assert ws.recv(timeout=5) == "still here"
            process.terminate()
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


@pytest.mark.parametrize("how", ["close-frame", "reset", "still-connected"])
def test_gunicorn_legacy_worker_stops_with_a_sender(how: str) -> None:
    """SIGTERM stops a worker whose application only sends, well within --graceful-timeout.

    The client leaves (a close handshake, a TCP reset), or is still connected and is
    closed with 1001 by the worker; then the application's next send() raises, its
    receive() returns None, it returns, and gunicorn's wait for requests in progress
    ends: the worker does not wait for the whole graceful timeout.
    """
    pytest.importorskip("gunicorn")
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", "-k", "takeover.legacy.gunicorn.LegacyWorker", "-w", "1",
        "-b", f"127.0.0.1:{port}", "--graceful-timeout", "20", *gunicorn_quiet_options(),
        "--chdir", str(LEGACY), "plot_app:application",
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    out = OutputLines(process.stdout)
    try:
        assert out.wait_for("Booting worker", 30), out.output
        client = RawClient(port)
        try:
            client.send(handshake_request("/data"))
            assert client.read_response()[0] == 101, out.output
            peer = peer_of(client)
            assert out.wait_for(SENDING.format(peer=peer), 10), out.output
            assert client.read_frame()[0] == TEXT
            if how == "still-connected":
                process.terminate()
                code, _ = client.read_close()  # data points, then the worker's close
                assert code == 1001
                client.send(client_frame(CLOSE, (1001).to_bytes(2, "big")))
                assert client.at_eof()
            else:
                leave(client, how)
        finally:
            client.close()
        left = time.monotonic()
        if how != "still-connected":
            process.terminate()
        try:
            process.wait(max(0.1, left + 8 - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"gunicorn still running 8 s after the client left:\n{out.output}")
        assert process.returncode == 0, out.output
        out.join(5)
        assert "Worker graceful timeout" not in out.output, out.output
        assert re.search(SEND_FAILED.format(peer=peer), out.output, re.MULTILINE), out.output
        received = re.search(RECEIVED.format(peer=peer), out.output, re.MULTILINE)
        assert received is not None and received.group(1) == "None", out.output
    finally:
        stop_process(process)


# -- in process: options, WebSocketServer, protocols, hooks ------------------------


@pytest.fixture
def in_process() -> Iterator[Any]:
    """Start a gevent server in this process; clients use gevent's sockets."""
    import gevent.socket

    servers: list[Any] = []

    def start(server: Any) -> Any:
        server.start()
        servers.append(server)

        def client(path: str = "/", **headers: str) -> RawClient:
            raw = RawClient(server.server_port, connect=gevent.socket.create_connection)
            raw.send(handshake_request(path, headers=headers))
            return raw

        return client

    yield start
    for server in servers:
        server.stop(timeout=1)


def test_idle_timeout_option(in_process: Any) -> None:
    from gevent.pywsgi import WSGIServer

    from takeover.legacy import WebSocketHandler

    class Handler(WebSocketHandler):
        idle_timeout = 0.4

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        ws = environ["wsgi.websocket"]
        while ws.receive() is not None:
            pass
        return []

    client = in_process(WSGIServer(("127.0.0.1", 0), app, handler_class=Handler, log=None))("/")
    assert client.read_response()[0] == 101
    started = time.monotonic()
    assert client.read_frame()[0] == PING  # after half the idle timeout
    close = raw_close(client)  # no pong: close 1001 after all of it
    assert int.from_bytes(close[:2], "big") == 1001
    assert 0.3 < time.monotonic() - started < 2


def test_a_peer_that_stops_reading_gives_send_a_websocket_error(in_process: Any) -> None:
    """gevent-websocket's send() blocks for ever on such a peer; the bridge's
    waits at the high-water mark, then raises the error its apps catch."""
    import socket

    import gevent.event
    from gevent.pywsgi import WSGIServer
    from geventwebsocket.exceptions import WebSocketError

    from takeover.legacy import WebSocketHandler

    class Handler(WebSocketHandler):
        high_water_mark = 256 * 1024
        send_timeout = 0.3

    outcome = gevent.event.AsyncResult()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        ws = environ["wsgi.websocket"]
        sent = 0
        try:
            for _ in range(2000):  # 125 MiB if nothing ever waited
                ws.send(b"x" * 65536)
                sent += 1
        except WebSocketError as error:
            outcome.set((sent, str(error)))
        return []

    client = in_process(WSGIServer(("127.0.0.1", 0), app, handler_class=Handler, log=None))("/")
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    assert client.read_response()[0] == 101
    sent, message = outcome.get(timeout=10)
    assert sent < 200 and "high_water_mark=262144" in message


def test_websocket_server_resource_protocol_and_send_frame(in_process: Any) -> None:
    from geventwebsocket import Resource, WebSocketApplication
    from geventwebsocket.protocols.base import BaseProtocol

    from takeover.legacy import LegacyWebSocket, WebSocketServer

    class ChatProtocol(BaseProtocol):  # type: ignore[misc]
        PROTOCOL_NAME = "chat.v1"

    seen: dict[str, Any] = {}

    class App(WebSocketApplication):  # type: ignore[misc]
        protocol_class = ChatProtocol

        def on_open(self) -> None:
            seen["ws"] = self.ws
            self.ws.send_frame("framed text", LegacyWebSocket.OPCODE_TEXT)
            self.ws.send("str as binary", binary=True)
            self.ws.send(b"bytes as text", binary=False)

        def on_message(self, message: Any) -> None:
            if message is not None:
                self.ws.close(4000, "done")

        def on_close(self, reason: Any) -> None:
            seen["closed"] = reason

    server = WebSocketServer(("127.0.0.1", 0), Resource(OrderedDict([("^/app", App)])), log=None)
    client = in_process(server)("/app", **{"Sec-WebSocket-Protocol": "other, chat.v1"})
    status, headers, _ = client.read_response()
    assert (status, headers["sec-websocket-protocol"]) == (101, "chat.v1")
    assert client.read_frame() == (TEXT, True, b"framed text")
    assert client.read_frame() == (BINARY, True, b"str as binary")
    assert client.read_frame() == (TEXT, True, b"bytes as text")
    client.send(client_frame(TEXT, b"bye"))
    assert raw_close(client) == (4000).to_bytes(2, "big") + b"done"
    client.send(client_frame(CLOSE, (4000).to_bytes(2, "big")))
    assert client.at_eof()
    ws = seen["ws"]
    assert ws.closed and ws.protocol == "other, chat.v1" and ws.path == "/app"
    assert "closed" in seen  # WebSocketApplication.on_close, after receive() raised
    with pytest.raises(WebSocketError):
        ws.send("after the close")
    assert server.clients == {}
