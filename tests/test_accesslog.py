"""The access log (issue 22, "Logs"): JSON lines from ``takeover.accesslog``; text lines by default.

The formatter and ``use_json`` are checked in-process; then ``takeover serve``
runs as a real process on 127.0.0.1 with an echo app, and its stderr is read:
one record per open, close and refused upgrade, with their fields, never one
per message.
"""

from __future__ import annotations

import calendar
import io
import json
import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from takeover.accesslog import JSONFormatter, use_json
from tests.clients import RawClient, handshake_request
from tests.processes import OutputLines, stop_process

DEADLINE = 15.0
MESSAGES = 100
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

ECHO_APP = """
from werkzeug.exceptions import HTTPException

from takeover import upgrade_websocket

def app(environ, start_response):
    try:
        ws, response = upgrade_websocket(environ)
    except HTTPException as error:  # a refused handshake: its 4xx
        return error(environ, start_response)
    ws.onmessage = lambda event: ws.send(event.data)
    return response(environ, start_response)
"""

CLOSE_FIELDS = {
    "event": "close", "path": "/", "peer": "127.0.0.1:5555", "code": 4001, "clean": True,
    "duration": 1.25, "messages_in": 100, "messages_out": 99, "bytes_in": 1234, "bytes_out": 987,
}


def record(
    fields: dict[str, Any] | None, message: str = "WebSocket closed / peer=127.0.0.1:5555"
) -> logging.LogRecord:
    """A record of the access logger, with ``fields`` as its ``takeover`` dict (none for None)."""
    extra = None if fields is None else {"takeover": fields}
    return logging.getLogger("takeover.access").makeRecord(
        "takeover.access", logging.INFO, __file__, 1, message, (), None, extra=extra
    )


# -- the formatter, in-process ------------------------------------------------


def test_a_record_with_fields_is_one_line_of_json_with_them() -> None:
    line = JSONFormatter().format(record(CLOSE_FIELDS))
    assert "\n" not in line
    entry = json.loads(line)
    assert list(entry)[:4] == ["time", "level", "logger", "event"]
    assert entry == {"time": entry["time"], "level": "INFO", "logger": "takeover.access", **CLOSE_FIELDS}
    assert "message" not in entry
    assert TIME.match(entry["time"]), entry["time"]


def test_the_time_is_utc_with_milliseconds() -> None:
    made = record({"event": "open", "path": "/", "peer": "127.0.0.1:1"})
    made.created, made.msecs = 0.042, 42.0  # 1970-01-01T00:00:00.042 UTC, whatever the local zone
    assert json.loads(JSONFormatter().format(made))["time"] == "1970-01-01T00:00:00.042Z"


def test_a_record_without_fields_has_its_message() -> None:
    entry = json.loads(JSONFormatter().format(record(None, "a plain %s")))
    assert entry == {
        "time": entry["time"], "level": "INFO", "logger": "takeover.access", "message": "a plain %s",
    }


def test_an_exception_is_one_line_and_values_json_cannot_hold_become_text() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        made = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info(),
            extra={"takeover": {"event": "odd", "path": Path("/p")}},
        )
    line = JSONFormatter().format(made)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["path"] == "/p" and entry["level"] == "ERROR"
    assert "ValueError: boom" in entry["exception"]


@pytest.fixture
def fresh_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("tests.accesslog.fresh")
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def test_use_json_writes_json_lines_once_and_stops_propagation(fresh_logger: logging.Logger) -> None:
    first, second = io.StringIO(), io.StringIO()
    use_json(fresh_logger, first)
    handler = use_json(fresh_logger, second)  # a second call replaces the first handler
    assert fresh_logger.handlers == [handler] and not fresh_logger.propagate
    assert fresh_logger.isEnabledFor(logging.INFO)  # even when nothing configured logging
    fresh_logger.info("WebSocket open / peer=127.0.0.1:1", extra={"takeover": {"event": "open", "path": "/"}})
    assert first.getvalue() == ""
    lines = second.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["event"] == "open"


def test_use_json_defaults_to_the_access_logger() -> None:
    logger = logging.getLogger("takeover.access")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    try:
        handler = use_json(stream=io.StringIO())
        assert handler in logger.handlers and not logger.propagate
    finally:
        logger.handlers[:] = saved[0]
        logger.propagate = saved[1]
        logger.setLevel(saved[2])


# -- takeover serve, as a real process ----------------------------------------


@dataclass
class Exchange:
    """What the client did: its address as the server saw it, and the payloads it sent."""

    peer: str
    sent: list[bytes]
    stderr: list[str]


def serve_and_exchange(tmp_path: Path, *flags: str, done: re.Pattern[str]) -> Exchange:
    """Serve the echo app, echo MESSAGES messages, close with 4001, have one upgrade refused (426).

    Waits (bounded) for the close and the refusal to show in stderr (``done`` matches the line
    of each), stops the server and returns its stderr lines.
    """
    (tmp_path / "echo.py").write_text(ECHO_APP)
    command = [sys.executable, "-m", "takeover", "serve", "echo:app", "--bind", "127.0.0.1:0", *flags]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = OutputLines(process.stdout), OutputLines(process.stderr)
    try:
        serving = stdout.wait_for(r"^takeover serving echo:app on ws://127\.0\.0\.1:(\d+)/", DEADLINE)
        assert serving, f"not serving; stderr: {stderr.output}"
        port = int(serving.group(1))
        sent = [f"message {index:03d}".encode() * (index % 5 + 1) for index in range(MESSAGES)]
        with connect(f"ws://127.0.0.1:{port}/echo", open_timeout=DEADLINE, close_timeout=DEADLINE) as ws:
            host, client_port = ws.socket.getsockname()[:2]
            for payload in sent:
                ws.send(payload.decode())
                assert ws.recv(timeout=DEADLINE) == payload.decode()
            ws.close(code=4001, reason="done")

        def count(output: str) -> int:
            return sum(1 for line in output.splitlines() if done.search(line))

        assert stderr.wait_output(lambda output: count(output) == 1, DEADLINE), stderr.output
        client = RawClient(port)
        try:
            client.send(handshake_request("/echo", headers={"Sec-WebSocket-Version": "12"}))
            assert client.read_response()[0] == 426
        finally:
            client.close()
        assert stderr.wait_output(lambda output: count(output) == 2, DEADLINE), stderr.output
        process.send_signal(signal.SIGTERM)
        assert process.wait(DEADLINE) == 0, stderr.output
    finally:
        stop_process(process)
    stdout.join(DEADLINE)
    stderr.join(DEADLINE)
    return Exchange(f"{host}:{client_port}", sent, stderr.output.splitlines())


def test_serve_json_logs_one_object_per_open_close_and_refusal(tmp_path: Path) -> None:
    started = time.time()
    exchange = serve_and_exchange(
        tmp_path, "--access-log-format", "json", done=re.compile(r'"event": "(close|rejected)"')
    )
    entries = [json.loads(line) for line in exchange.stderr if line.startswith("{")]
    # The access log is JSON only (no text copy through the root logger), nothing per message.
    assert not [line for line in exchange.stderr if "WebSocket " in line and not line.startswith("{")]
    assert [entry["event"] for entry in entries] == ["open", "close", "rejected"], exchange.stderr
    opened, closed, rejected = entries
    for entry in entries:
        assert entry["logger"] == "takeover.access" and entry["level"] == "INFO"
        assert TIME.match(entry["time"]), entry
        logged = calendar.timegm(time.strptime(entry["time"][:19], "%Y-%m-%dT%H:%M:%S"))
        assert started - 1 <= logged <= time.time() + 1, entry
        assert "message" not in entry
    assert opened == {**opened, "path": "/echo", "peer": exchange.peer}
    assert closed == {
        **closed, "path": "/echo", "peer": exchange.peer, "code": 4001, "clean": True,
        "messages_in": MESSAGES, "messages_out": MESSAGES,
    }
    assert isinstance(closed["duration"], float) and closed["duration"] > 0
    # On the wire: a client frame has at least 6 bytes of header (masked), a server frame 2.
    payload = sum(len(message) for message in exchange.sent)
    assert closed["bytes_in"] >= payload + 6 * MESSAGES
    assert closed["bytes_out"] >= payload + 2 * MESSAGES
    assert rejected["status"] == 426 and rejected["path"] == "/echo"
    assert re.fullmatch(r"127\.0\.0\.1:\d+", rejected["peer"]), rejected
    assert "version" in rejected["reason"].lower()


def test_serve_default_keeps_the_text_lines(tmp_path: Path) -> None:
    exchange = serve_and_exchange(tmp_path, done=re.compile(r"WebSocket (closed|refused) "))
    prefix = r"^\S+ \S+ takeover\.access INFO "  # basicConfig's "%(asctime)s %(name)s %(levelname)s"
    peer = re.escape(exchange.peer)
    expected = [
        rf"{prefix}WebSocket open /echo peer={peer}$",
        rf"{prefix}WebSocket closed /echo peer={peer} code=4001 duration=\d+\.\d{{3}}s$",
        rf"{prefix}WebSocket refused /echo peer=127\.0\.0\.1:\d+ status=426: Unsupported WebSocket version",
    ]
    access = [line for line in exchange.stderr if "takeover.access" in line]
    assert len(access) == 3, exchange.stderr
    for pattern, line in zip(expected, access, strict=True):
        assert re.search(pattern, line), (pattern, line)
    assert not [line for line in exchange.stderr if line.startswith("{")]
