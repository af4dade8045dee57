"""permessage-deflate on takeover's servers, with raw clients that read the frames' RSV1 bit themselves.

* a decompression bomb (1 GiB of zeros in about 1 MiB) against ``examples/echo.py
  --compression deflate`` run as a process: 1009 at once, and its memory back where it was;
* ``takeover.Server(compression=)``, ``upgrade_websocket(compression=)``,
  :func:`takeover.broadcast` and ``takeover serve --compression``, in-process;
* Werkzeug's threaded server: concurrent sends keep the compressed stream in order.

Third-party clients negotiating deflate are tests/interop/test_deflate_interop.py.
"""

from __future__ import annotations

import os
import time
import zlib
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.socket
import pytest
from websockets.sync.client import connect
from werkzeug.wrappers import Request

from takeover import DeflateOptions, WebSocket, broadcast, create_server, upgrade_websocket
from takeover.server import Server
from tests.clients import RawClient, handshake_request
from tests.frames import client_frame
from tests.paths import EXAMPLES
from tests.processes import start_server

TEXT, BINARY, CLOSE = 0x1, 0x2, 0x8
RSV1 = 0x40
TAIL = b"\x00\x00\xff\xff"


# -- a decompression bomb ------------------------------------------------------------


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (the peak) of a process, in MiB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(value.split()[0]) / 1024
    return values


def zeros_compressed(total: int, step: int = 1 << 20) -> bytes:
    """``total`` zero bytes, deflated a MiB at a time (the test never holds the zeros)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(step)
    parts = [compressor.compress(zeros) for _ in range(total // step)]
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    return b"".join(parts)[:-4]


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc/PID/status")
@pytest.mark.parametrize("fragment", [None, 4096], ids=["one-frame", "4-KiB-fragments"])
def test_a_decompression_bomb_closes_1009_and_memory_stays_flat(fragment: int | None) -> None:
    payload = zeros_compressed(1 << 30)  # 1 GiB of zeros
    assert len(payload) < 1_100_000
    if fragment is None:
        pieces = [payload]
    else:
        pieces = [payload[i : i + fragment] for i in range(0, len(payload), fragment)]
    frames = b"".join(
        client_frame(
            BINARY if index == 0 else 0,
            piece,
            fin=index == len(pieces) - 1,
            rsv=RSV1 if index == 0 else 0,
            mask=b"\x00\x00\x00\x00",  # masking with zeros keeps the payload as it is (RFC 6455 §5.3)
        )
        for index, piece in enumerate(pieces)
    )
    server = start_server(EXAMPLES / "echo.py", "--idle-timeout", "0", "--compression", "deflate")
    client = RawClient(server.port)
    try:
        client.send(handshake_request(headers={"Sec-WebSocket-Extensions": "permessage-deflate"}))
        status, headers, _ = client.read_response()
        assert (status, headers["sec-websocket-extensions"]) == (101, "permessage-deflate")
        client.send(client_frame(TEXT, b"warm up"))  # the echo path is loaded before measuring
        assert read_message(client, zlib.decompressobj(-15)) == (TEXT, True, b"warm up")
        before = memory_mib(server.process.pid)

        started = time.monotonic()
        try:
            client.send(frames)
        except OSError:
            pass  # the server may close before reading every fragment
        code, reason = client.read_close()
        elapsed = time.monotonic() - started
        assert (code, reason) == (1009, "Message inflates to over the limit of 67108864 bytes")
        assert client.at_eof()
        after = memory_mib(server.process.pid)
    finally:
        client.close()
        server.stop()
    assert elapsed < 5, f"1009 took {elapsed:.2f}s"
    # At most the 64 MiB limit was inflated (not 1 GiB), and none of it is kept.
    peak = after["VmHWM"] - before["VmRSS"]
    assert peak < 64 + 20, f"peak RSS grew by {peak:.1f} MiB"
    grown = after["VmRSS"] - before["VmRSS"]
    assert grown < 20, f"RSS grew by {grown:.1f} MiB (before {before}, after {after})"


# -- in-process: options, in-app upgrades, broadcast -----------------------------------------


def read_message(client: RawClient, inflater: Any | None = None) -> tuple[int, bool, bytes]:
    """One server message: (opcode, compressed, payload as the application sent it)."""
    while len(client.buffer) < 2:
        client._fill()
    first = client.buffer[0]
    opcode, fin, payload = client.read_frame()
    assert fin
    if first & RSV1:
        assert inflater is not None, "a compressed frame on a connection without deflate"
        return opcode, True, inflater.decompress(payload + TAIL)
    return opcode, False, payload


def deflate_client(
    server: Server, offer: str = "permessage-deflate", path: str = "/"
) -> tuple[RawClient, dict[str, str]]:
    client = RawClient(server.address[1], connect=gevent.socket.create_connection)
    client.send(handshake_request(path, headers={"Sec-WebSocket-Extensions": offer} if offer else None))
    status, headers, _ = client.read_response()
    assert status == 101
    return client, headers


def test_broadcast_frames_for_each_kind_of_connection(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    sockets: list[WebSocket] = []
    settings = {
        "/plain": None,
        "/takeover": "deflate",
        "/nct": DeflateOptions(server_no_context_takeover=True, threshold=0),
        "/nct2": DeflateOptions(server_no_context_takeover=True, threshold=0),
        "/level1": DeflateOptions(server_no_context_takeover=True, threshold=0, level=1),
    }

    def listener(request: Request, sock: Any, head: bytes) -> None:
        compression = settings[request.path]
        sockets.append(upgrade_websocket(request, socket=sock, head=head, compression=compression).socket)

    server.on("upgrade", listener)
    clients = {path: deflate_client(server, path=path)[0] for path in settings}
    while len(sockets) < len(settings) or any(ws.ready_state != WebSocket.OPEN for ws in sockets):
        gevent.sleep(0.01)
    inflaters = {path: zlib.decompressobj(-15) for path in settings}
    message = "a broadcast message, " * 100

    compressions = 0
    real_compress = zlib.compressobj

    def counting(*args: Any) -> Any:
        nonlocal compressions
        compressions += 1
        return real_compress(*args)

    monkeypatch.setattr(zlib, "compressobj", counting)
    assert broadcast(sockets, message) == 5
    assert broadcast(sockets, message.encode()) == 5
    monkeypatch.undo()
    # Per message: one shared compression per parameter set without context
    # takeover (2), and the one connection with context takeover (its compressor
    # is made once, then kept).
    assert compressions == 2 + 2 + 1

    for path, client in clients.items():
        for expected_opcode, data in [(TEXT, message.encode()), (BINARY, message.encode())]:
            opcode, was_compressed, payload = read_message(client, inflaters[path])
            assert (opcode, payload) == (expected_opcode, data)
            assert was_compressed is (path != "/plain")


def test_the_servers_compression_is_the_default_for_in_app_upgrades() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        compression: Any = {"/off": None, "/default": ...}[environ["PATH_INFO"]]
        if compression is ...:
            ws, response = upgrade_websocket(environ)
        else:
            ws, response = upgrade_websocket(environ, compression=compression)
        ws.onmessage = lambda event: ws.send(event.data)
        return response(environ, start_response)

    srv = create_server(app, compression=DeflateOptions(level=9))
    srv.listen(0)
    try:
        client, headers = deflate_client(srv, "permessage-deflate; client_max_window_bits", "/default")
        assert headers["sec-websocket-extensions"] == "permessage-deflate"
        client.send(client_frame(TEXT, bytes.fromhex("f248cdc9c90700"), rsv=RSV1))
        assert read_message(client, zlib.decompressobj(-15)) == (TEXT, True, b"Hello")
        client, headers = deflate_client(srv, "permessage-deflate", "/off")
        assert "sec-websocket-extensions" not in headers
        client.send(client_frame(TEXT, b"Hello"))
        assert read_message(client) == (TEXT, False, b"Hello")
    finally:
        srv.close()


def test_extensions_attribute_and_declined_offers(server: Server) -> None:
    result = gevent.event.AsyncResult()

    def listener(request: Request, sock: Any, head: bytes) -> None:
        result.set(upgrade_websocket(request, socket=sock, head=head, compression="deflate").socket)

    server.on("upgrade", listener)
    _, headers = deflate_client(
        server, "permessage-deflate; server_max_window_bits=7, permessage-deflate; server_max_window_bits=11"
    )
    assert headers["sec-websocket-extensions"] == "permessage-deflate; server_max_window_bits=11"
    assert result.get(timeout=5).extensions == "permessage-deflate; server_max_window_bits=11"

    result = gevent.event.AsyncResult()
    _, headers = deflate_client(server, "permessage-deflate; unknown")
    assert "sec-websocket-extensions" not in headers
    assert result.get(timeout=5).extensions == ""


def test_a_malformed_extensions_header_is_refused(server: Server) -> None:
    server.on(
        "upgrade",
        lambda request, sock, head: upgrade_websocket(request, socket=sock, head=head, compression="deflate"),
    )
    client = RawClient(server.address[1], connect=gevent.socket.create_connection)
    client.send(handshake_request(headers={"Sec-WebSocket-Extensions": "permessage-deflate; a=b c"}))
    status, _, body = client.read_response()
    assert status == 400
    assert body.startswith(b"Invalid Sec-WebSocket-Extensions header")


def test_an_invalid_compression_option_is_refused_at_once() -> None:
    environ = {"REQUEST_METHOD": "GET"}
    with pytest.raises(ValueError, match="Invalid compression 'gzip'"):
        upgrade_websocket(environ, compression="gzip")
    with pytest.raises(ValueError, match="Invalid compression"):
        create_server(compression="zstd")


# -- takeover serve --compression ----------------------------------------------------


WEBSOCKET_APP = """
from takeover import upgrade_websocket

def app(environ, start_response):
    ws, response = upgrade_websocket(environ)  # the server's --compression applies
    ws.onmessage = lambda event: ws.send(event.data)
    return response(environ, start_response)
"""


def test_takeover_serve_compression(tmp_path: Path) -> None:
    from tests.servers import test_cli

    (tmp_path / "wsapp.py").write_text(WEBSOCKET_APP)
    served = test_cli.Served(
        [
            *test_cli.TAKEOVER,
            "serve",
            "wsapp:app",
            "--bind",
            "127.0.0.1:0",
            "--compression",
            "deflate",
            "--compression-level",
            "1",
            "--compression-threshold",
            "10",
        ],
        tmp_path,
    )
    try:
        client = RawClient(int(served.wait_serving().group(3)))
        client.send(handshake_request(headers={"Sec-WebSocket-Extensions": "permessage-deflate"}))
        status, headers, _ = client.read_response()
        assert (status, headers["sec-websocket-extensions"]) == (101, "permessage-deflate")
        inflater = zlib.decompressobj(-15)
        client.send(client_frame(TEXT, b"short"))
        assert read_message(client, inflater) == (TEXT, False, b"short")  # under the threshold
        client.send(client_frame(TEXT, b"long enough to compress"))
        assert read_message(client, inflater) == (TEXT, True, b"long enough to compress")
        client.close()
    finally:
        served.process.terminate()
        served.process.wait(10)


def test_takeover_serve_compression_options_need_compression(tmp_path: Path) -> None:
    import subprocess

    from tests.servers import test_cli

    completed = subprocess.run(
        [*test_cli.TAKEOVER, "serve", "x:app", "--compression-level", "3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip() == "takeover: --compression-level needs --compression deflate"


# -- threads: Werkzeug's threaded server ---------------------------------------------


def test_concurrent_sends_from_threads_keep_the_compressed_stream_intact() -> None:
    """With context takeover, each frame must leave in the order the compressor saw it."""
    import threading

    from werkzeug.serving import make_server

    senders, count = 4, 200

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        ws, response = upgrade_websocket(environ, compression="deflate")

        def burst(sender: int) -> None:
            for index in range(count):
                ws.send(f"sender {sender} message {index} " + "padding " * (index % 50))

        def on_open(event: Any) -> None:
            for sender in range(senders):
                threading.Thread(target=burst, args=(sender,), daemon=True).start()

        ws.onopen = on_open
        return response(environ, start_response)

    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with connect(f"ws://127.0.0.1:{httpd.server_port}/", compression="deflate") as ws:
            assert ws.response.headers["Sec-WebSocket-Extensions"] == "permessage-deflate"
            received = [ws.recv(timeout=20) for _ in range(senders * count)]
    finally:
        httpd.shutdown()
        httpd.server_close()
    for sender in range(senders):
        prefix = f"sender {sender} "
        mine = [message for message in received if isinstance(message, str) and message.startswith(prefix)]
        assert [message.split()[3] for message in mine] == [str(index) for index in range(count)]
