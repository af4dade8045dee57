"""examples/chat's server as a process, for the chat tests over the wire and in Chromium."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

from websockets.sync.client import ClientConnection, connect

from tests.paths import ROOT

APP = "examples.chat.app:app"
HOST = "127.0.0.1"
LISTENING = re.compile(r"ws://[^:]+:(\d+)/")
START_TIMEOUT = 20.0
WAIT = 5.0  # seconds any single expected message may take


class ChatServer:
    """``python -m takeover serve examples.chat.app:app`` as a process.

    Its stdout and stderr (the banner, the access log, the chat's join/leave
    lines) are read by a thread, so a chatty server never blocks on a full pipe.
    """

    def __init__(self, port: int = 0) -> None:
        command = [sys.executable, "-m", "takeover", "serve", APP, "--bind", f"{HOST}:{port}"]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines: list[str] = []
        self._new = threading.Condition()
        self._eof = False
        threading.Thread(target=self._pump, daemon=True).start()
        try:
            banner = self.wait_for_line(LISTENING, START_TIMEOUT)
        except AssertionError:
            self.stop()
            raise
        match = LISTENING.search(banner)
        assert match is not None
        self.port = int(match.group(1))

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with self._new:
                self.lines.append(raw.decode(errors="replace"))
                self._new.notify_all()
        with self._new:
            self._eof = True
            self._new.notify_all()

    @property
    def output(self) -> str:
        with self._new:
            return "".join(self.lines)

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws"

    def client(self) -> ClientConnection:
        """A new connection to the chat's WebSocket (tests/chat_protocol.py's rooms have this)."""
        return connect(self.ws_url, open_timeout=WAIT, close_timeout=WAIT)

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def wait_for_line(self, pattern: re.Pattern[str], timeout: float = WAIT, start: int = 0) -> str:
        """The first output line from index ``start`` on that matches ``pattern``."""
        deadline = time.monotonic() + timeout
        with self._new:
            index = start
            while True:
                while index < len(self.lines):
                    if pattern.search(self.lines[index]):
                        return self.lines[index]
                    index += 1
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    why = "exited" if self._eof else f"nothing within {timeout:g} s"
                    raise AssertionError(
                        f"no line matching {pattern.pattern!r} ({why}):\n{''.join(self.lines)}"
                    )
                self._new.wait(remaining)

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM (a graceful close), then SIGKILL after ``timeout`` seconds."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode
