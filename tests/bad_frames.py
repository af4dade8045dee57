"""The reliability issue's bad frames, as bytes: each with the close code it must get.

tests/protocol/test_bad_input.py feeds them to the sans-I/O core;
tests/servers/test_bad_input.py sends them to a running server.
"""

from __future__ import annotations

from tests.frames import client_frame, frame_header

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA

# Each is refused from what is sent: most from the header alone, before any payload.
VIOLATIONS = [
    # §5.2: the most significant bit of a 64-bit length must be 0.
    ("length-top-bit-alone", frame_header(0x82, 1 << 63, form=64), 1002),
    ("length-top-bit-and-small", frame_header(0x82, (1 << 63) | 5, form=64), 1002),
    ("length-all-ones", frame_header(0x82, (1 << 64) - 1, form=64), 1002),
    # §5.2: "the minimal number of bytes MUST be used to encode the length".
    ("non-minimal-16-for-5", frame_header(0x82, 5, form=16), 1002),
    ("non-minimal-16-for-125", frame_header(0x82, 125, form=16), 1002),
    ("non-minimal-64-for-200", frame_header(0x82, 200, form=64), 1002),
    ("non-minimal-64-for-65535", frame_header(0x82, 65535, form=64), 1002),
    # §5.5: control frames carry at most 125 bytes.
    ("big-ping", frame_header(0x89, 126, form=16), 1002),
    ("big-pong", frame_header(0x8A, 126, form=16), 1002),
    ("big-close", frame_header(0x88, 126, form=16), 1002),
    ("big-close-64", frame_header(0x88, 70000, form=64), 1002),
    # §5.5: control frames must not be fragmented.
    ("fragmented-ping", client_frame(PING, b"p", fin=False), 1002),
    ("fragmented-pong", client_frame(PONG, b"p", fin=False), 1002),
    ("fragmented-close", client_frame(CLOSE, (1000).to_bytes(2, "big"), fin=False), 1002),
    (
        "fragmented-ping-inside-a-message",
        client_frame(TEXT, b"a", fin=False) + client_frame(PING, b"", fin=False),
        1002,
    ),
    # §5.2: reserved opcodes and bits (no extension negotiated).
    *[(f"opcode-{op:#x}", client_frame(op, b"x"), 1002) for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15)],
    ("rsv2", client_frame(TEXT, b"x", rsv=0x20), 1002),
    ("rsv3", client_frame(TEXT, b"x", rsv=0x10), 1002),
    ("rsv-all", client_frame(BINARY, b"x", rsv=0x70), 1002),
    ("rsv1-on-a-ping", client_frame(PING, b"x", rsv=0x40), 1002),
    ("rsv2-on-a-continuation", client_frame(TEXT, b"a", fin=False) + client_frame(0x0, b"b", rsv=0x20), 1002),
]
