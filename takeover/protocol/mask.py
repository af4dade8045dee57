"""RFC 6455 §5.3 masking: XOR the payload with the 4-byte masking key.

Every client frame is masked, so this runs over every byte a server receives.
A per-byte Python loop manages about 6 MB/s; the fallback here XORs the whole
payload as one big integer (about 130 MB/s) and the optional C extension
``takeover.protocol._speedups`` XORs eight bytes at a time (several GB/s).
``apply_mask`` is the fastest one that imported; both are exported so the same
tests run against each (as websockets does with its C ``apply_mask``).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["SPEEDUPS", "apply_mask", "c_apply_mask", "python_apply_mask"]


def python_apply_mask(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
    """Return ``data`` XORed with the repeating 4-byte ``mask`` (pure Python)."""
    if len(mask) != 4:
        raise ValueError("mask must be 4 bytes")
    size = len(data)
    if size == 0:
        return b""
    repeated = bytes(mask) * (size >> 2) + bytes(mask[: size & 3])
    value = int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")
    return value.to_bytes(size, "little")


c_apply_mask: Callable[[bytes | bytearray | memoryview, bytes | bytearray], bytes] | None
try:
    from takeover.protocol import _speedups  # type: ignore[attr-defined]

    c_apply_mask = _speedups.apply_mask
except ImportError:  # the extension is optional: built when a C compiler is present
    c_apply_mask = None

#: True when the C extension is in use.
SPEEDUPS = c_apply_mask is not None
apply_mask = c_apply_mask if c_apply_mask is not None else python_apply_mask
