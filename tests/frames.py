"""Frames as bytes, for every layer's tests: the one client frame builder, a server frame parser,
the masking implementations (no sockets, no gevent).

Imported as ``from tests.frames import ...``: ``tests/`` and its layer folders are packages, so
pytest's default ``prepend`` import mode puts the repository's root on ``sys.path``.
"""

from __future__ import annotations

import pytest

from takeover.protocol.mask import c_apply_mask, python_apply_mask

#: The masking key of the RFC 6455 §5.7 examples.
RFC_MASK = b"\x37\xfa\x21\x3d"

#: Both masking implementations; the C one skips when the extension is not built.
MASK_IMPLEMENTATIONS = [
    pytest.param(python_apply_mask, id="python"),
    pytest.param(
        c_apply_mask,
        id="c",
        marks=pytest.mark.skipif(c_apply_mask is None, reason="takeover.protocol._speedups is not built"),
    ),
]


def naive_mask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """The per-byte reference of RFC 6455 §5.3: ``j = i MOD 4``."""
    return bytes(byte ^ mask[i % 4] for i, byte in enumerate(bytes(data)))


def length_header(length: int, form: int | None = None) -> bytes:
    """The payload length field (without the mask bit): ``form`` 7, 16 or 64 forces an encoding."""
    if form is None:
        form = 7 if length < 126 else 16 if length < 65536 else 64
    if form == 7:
        assert length < 126
        return bytes((length,))
    if form == 16:
        return bytes((126,)) + length.to_bytes(2, "big")
    assert form == 64
    return bytes((127,)) + length.to_bytes(8, "big")


def frame_header(first: int, length: int, *, form: int | None = None, mask: bytes | None = RFC_MASK) -> bytes:
    """A frame header: the ``first`` byte (FIN, RSV, opcode), the length in the minimal encoding
    (``form`` 7, 16 or 64 forces one) and the masking key (None: unmasked, no key).

    ``length`` need not match any payload: a header alone tests what is refused before the payload.
    """
    lengths = length_header(length, form)
    second = lengths[0] | (0x80 if mask is not None else 0)
    return bytes((first, second)) + lengths[1:] + (b"" if mask is None else mask)


def client_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    mask: bytes | None = RFC_MASK,
    rsv: int = 0,
    form: int | None = None,
) -> bytes:
    """A client frame masked with ``mask`` (None: unmasked); ``form`` forces the length encoding."""
    first = (0x80 if fin else 0) | rsv | opcode
    header = frame_header(first, len(payload), form=form, mask=mask)
    if mask is None:
        return header + payload
    return header + naive_mask(payload, mask)


def server_frames(data: bytes) -> list[tuple[int, bool, bytes]]:
    """Split server output into ``(opcode, fin, payload)``; asserts it is unmasked, RSV-free, minimal."""
    frames = []
    pos = 0
    while pos < len(data):
        first, second = data[pos], data[pos + 1]
        assert not second & 0x80, "server frames must not be masked (RFC 6455 §5.1)"
        assert not first & 0x70, "server frames must not set RSV bits"
        length = second & 0x7F
        pos += 2
        if length == 126:
            length = int.from_bytes(data[pos : pos + 2], "big")
            assert length >= 126, "non-minimal 16-bit length"
            pos += 2
        elif length == 127:
            length = int.from_bytes(data[pos : pos + 8], "big")
            assert length >= 65536, "non-minimal 64-bit length"
            pos += 8
        payload = data[pos : pos + length]
        assert len(payload) == length, "truncated server frame"
        pos += length
        frames.append((first & 0x0F, bool(first & 0x80), payload))
    return frames
