"""The soak's fragment flood: one client, one message, a million 1-byte fragments.

A client may cut a message into any number of fragments (RFC 6455 §5.4), down
to one payload byte in a 7-byte masked frame. :func:`flood` opens a message
(a first frame without FIN), sends 1-byte continuation frames as fast as the
server reads them for a bounded count and time, then a ping: its pong says
the server has read everything before it, and the server's RSS is read then
(``/proc/<pid>/status``). The server must hold the message in about a byte
per byte; :func:`within_bound` is the check ``make soak`` applies. The
message is then finished and its echo checked, and the connection closed.

A plain blocking socket client: no Node, no gevent.
"""

from __future__ import annotations

import base64
import os
import socket
import time
from dataclasses import dataclass

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
_MASK = b"\x0f\x1e\x2d\x3c"
#: The bound on the server's RSS growth: this many bytes a fragment, plus slack for the allocator.
BYTES_PER_FRAGMENT = 4
SLACK = 8 * 1024 * 1024


@dataclass
class FloodResult:
    kind: str
    fragments: int
    seconds: float
    rss_growth: int  # bytes, from before the message to after its last fragment was read

    def __str__(self) -> str:
        return (
            f"{self.kind} fragment flood: {self.fragments:,} fragments of 1 byte in {self.seconds:.1f} s,"
            f" server RSS +{self.rss_growth / 1024:,.0f} KB ({self.rss_growth / max(self.fragments, 1):.1f}"
            f" bytes a fragment; bound {bound(self.fragments) / 1024:,.0f} KB)"
        )


def bound(fragments: int) -> int:
    return SLACK + BYTES_PER_FRAGMENT * fragments


def within_bound(result: FloodResult) -> bool:
    return result.rss_growth <= bound(result.fragments)


def vm_rss(pid: int) -> int:
    """Resident set size in bytes, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame (§5.2, §5.3); payloads under 126 bytes only."""
    assert len(payload) < 126
    masked = bytes(byte ^ _MASK[i % 4] for i, byte in enumerate(payload))
    return bytes(((0x80 if fin else 0) | opcode, 0x80 | len(payload))) + _MASK + masked


class _Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buffer = bytearray()
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"flood: the upgrade was refused: {head[:100]!r}")
        self.buffer = bytearray(rest)

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("flood: the server closed the connection")
        self.buffer += data

    def read_frame(self) -> tuple[int, bytes]:
        """One unmasked server frame: (opcode, payload)."""
        while len(self.buffer) < 2:
            self._fill()
        length, start = self.buffer[1] & 0x7F, 2
        if length >= 126:
            start = 4 if length == 126 else 10
            while len(self.buffer) < start:
                self._fill()
            length = int.from_bytes(self.buffer[2:start], "big")
        while len(self.buffer) < start + length:
            self._fill()
        opcode, payload = self.buffer[0] & 0x0F, bytes(self.buffer[start : start + length])
        del self.buffer[: start + length]
        return opcode, payload

    def ping(self, payload: bytes) -> None:
        """Ping, and wait for the pong: the server has read all that was sent before it."""
        self.sock.sendall(_frame(PING, payload))
        while self.read_frame() != (PONG, payload):
            pass


def flood(port: int, pid: int, kind: str, max_fragments: int, max_seconds: float) -> FloodResult:
    """Flood the echo server on ``port`` (process ``pid``) with one ``kind`` ("binary" or "text") message."""
    opcode = TEXT if kind == "text" else BINARY
    # Text: each "€" cut into its three bytes, one a fragment (§8.1: only the message must be UTF-8).
    pieces = [bytes((byte,)) for byte in "€".encode()] if opcode == TEXT else [b"\xab"]
    frames = b"".join(_frame(CONT, piece, fin=False) for piece in pieces)
    chunk = frames * (65536 // len(frames))
    per_chunk = len(chunk) // 7
    client = _Client(port)
    try:
        client.ping(b"before")
        before = vm_rss(pid)
        client.sock.sendall(_frame(opcode, b"", fin=False))
        sent = 0
        started = time.monotonic()
        while sent + per_chunk <= max_fragments and time.monotonic() - started < max_seconds:
            client.sock.sendall(chunk)
            sent += per_chunk
        client.ping(b"after")
        seconds = time.monotonic() - started
        growth = vm_rss(pid) - before
        client.sock.sendall(_frame(CONT, b""))
        echoed_opcode, echoed = client.read_frame()
        if echoed_opcode != opcode or echoed != b"".join(pieces) * (sent // len(pieces)):
            raise RuntimeError(f"flood: the {kind} message did not come back whole")
        client.sock.sendall(_frame(CLOSE, (1000).to_bytes(2, "big")))
        while client.read_frame()[0] != CLOSE:
            pass
    finally:
        client.sock.close()
    return FloodResult(kind, sent, seconds, growth)
