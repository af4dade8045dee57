"""A fragment flood against ``examples/echo.py``: the server's RSS must stay flat (RFC 6455 §5.4).

One raw client opens a message with a masked first frame without FIN, then
sends 1-byte masked continuation frames (7 bytes on the wire each) as fast as
the server takes them, for a bounded time and count. A ping (§5.4: control
frames may come between fragments) and its pong mark the point where the
server has read every byte sent; its VmRSS (/proc/<pid>/status) is read then.
The message so far must cost about a byte per byte, not an object per
fragment: the growth is bounded by 4 bytes a fragment plus a few MiB, and
30 MB in any case. The message is then finished and must come back whole.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.clients import RawClient, handshake_request
from tests.frames import client_frame
from tests.paths import EXAMPLES
from tests.processes import ServerProcess, start_server

BINARY, TEXT, CONT, CLOSE, PING, PONG = 0x2, 0x1, 0x0, 0x8, 0x9, 0xA
MASK = b"\x0f\x1e\x2d\x3c"
MAX_FRAMES = 2_000_000
MAX_SECONDS = 10.0
#: Per fragment (the old code held ~40-60 bytes), and for the allocator's slack.
BYTES_PER_FRAGMENT = 4
SLACK = 8 * 1024 * 1024
LIMIT = 30 * 1000 * 1000


def vm_rss(pid: int) -> int:
    """The process's resident set size in bytes (VmRSS of /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/<pid>/status")


@pytest.fixture
def echo() -> Iterator[ServerProcess]:
    server = start_server(EXAMPLES / "echo.py", "--idle-timeout", "0")
    yield server
    server.stop()


def connect(server: ServerProcess) -> RawClient:
    client = RawClient(server.port, timeout=30)
    client.send(handshake_request())
    status, _, _ = client.read_response()
    assert status == 101
    return client


def round_trip(client: RawClient, opcode: int, payload: bytes) -> None:
    """A small fragmented message and its echo: the code paths are warm before the baseline."""
    client.send(client_frame(opcode, payload[:1], fin=False, mask=MASK))
    client.send(client_frame(CONT, payload[1:], mask=MASK))
    assert client.read_frame() == (opcode, True, payload)


def sync(client: RawClient, payload: bytes) -> None:
    """Ping and wait for its pong: the server has read everything sent before."""
    client.send(client_frame(PING, payload, mask=MASK))
    opcode, _, data = client.read_frame()
    assert (opcode, data) == (PONG, payload)


def flood(server: ServerProcess, opcode: int, pieces: list[bytes]) -> tuple[int, int, float]:
    """Open a message, send 1-byte fragments cycling through ``pieces``; (fragments, RSS growth, seconds)."""
    client = connect(server)
    try:
        round_trip(client, opcode, "warm-up €".encode())
        sync(client, b"before")
        before = vm_rss(server.process.pid)
        frames = b"".join(client_frame(CONT, piece, fin=False, mask=MASK) for piece in pieces)
        chunk = frames * (65536 // len(frames))
        per_chunk = len(chunk) // 7
        client.send(client_frame(opcode, b"", fin=False, mask=MASK))
        sent = 0
        started = time.monotonic()
        while sent + per_chunk <= MAX_FRAMES and time.monotonic() - started < MAX_SECONDS:
            client.send(chunk)
            sent += per_chunk
        sync(client, b"after")
        elapsed = time.monotonic() - started
        growth = vm_rss(server.process.pid) - before
        # The message ends and comes back whole: nothing was lost on the way.
        client.send(client_frame(CONT, b"", mask=MASK))
        echoed_opcode, fin, echoed = client.read_frame()
        assert (echoed_opcode, fin, len(echoed)) == (opcode, True, sent)
        if opcode == TEXT:
            assert echoed.decode() == b"".join(pieces).decode() * (sent // len(pieces))
        client.send(client_frame(CLOSE, (1000).to_bytes(2, "big"), mask=MASK))
        assert client.read_close() == (1000, "")
        return sent, growth, elapsed
    finally:
        client.sock.close()


def check(kind: str, sent: int, growth: int, elapsed: float) -> None:
    print(f"{kind} flood: {sent:,} fragments in {elapsed:.1f} s, server RSS growth {growth / 1e6:.1f} MB")
    assert sent >= 100_000, f"only {sent} fragments in {MAX_SECONDS} s: too few to measure"
    bound = min(LIMIT, SLACK + BYTES_PER_FRAGMENT * sent)
    assert growth < bound, (
        f"{kind}: {sent:,} fragments of 1 byte grew the server's RSS by {growth:,} bytes"
        f" ({growth / sent:.1f} per fragment; bound {bound:,})"
    )


def test_one_byte_binary_fragments_do_not_grow_the_server(echo: ServerProcess) -> None:
    check("binary", *flood(echo, BINARY, [b"\xab"]))


def test_one_byte_text_fragments_do_not_grow_the_server(echo: ServerProcess) -> None:
    # Each "€" is cut into its three bytes, one per fragment (§8.1: only the message must be UTF-8).
    check("text", *flood(echo, TEXT, [bytes((byte,)) for byte in "€".encode()]))
