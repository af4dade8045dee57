"""RFC 6455 §5.3 masking: both implementations against a per-byte reference."""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import pytest

import takeover.protocol.mask as mask_module
from tests.frames import MASK_IMPLEMENTATIONS, RFC_MASK, naive_mask

MaskFunction = Callable[[bytes | bytearray | memoryview, bytes | bytearray], bytes]

MASKS = [
    RFC_MASK,
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x01\x02\x03\x04",
    b"\x80\x00\x00\x01",
]


@pytest.fixture(params=MASK_IMPLEMENTATIONS)
def apply_mask(request: pytest.FixtureRequest) -> MaskFunction:
    return request.param  # type: ignore[no-any-return]


def _random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


class TestAgainstReference:
    @pytest.mark.parametrize("mask", MASKS, ids=lambda m: m.hex())
    def test_every_length_up_to_70(self, apply_mask: MaskFunction, mask: bytes) -> None:
        for size in range(71):
            data = _random_bytes(size, size)
            result = apply_mask(data, mask)
            assert result == naive_mask(data, mask), size
            assert type(result) is bytes

    @pytest.mark.parametrize("size", [1 << 20, (1 << 20) + 3])
    def test_large_input(self, apply_mask: MaskFunction, size: int) -> None:
        data = _random_bytes(size, 7)
        assert apply_mask(data, RFC_MASK) == naive_mask(data, RFC_MASK)

    def test_zero_mask_is_identity(self, apply_mask: MaskFunction) -> None:
        data = _random_bytes(1001, 1)
        assert apply_mask(data, b"\x00\x00\x00\x00") == data

    def test_masking_twice_restores_the_data(self, apply_mask: MaskFunction) -> None:
        data = _random_bytes(999, 2)
        masked = apply_mask(data, RFC_MASK)
        assert masked != data
        assert apply_mask(masked, RFC_MASK) == data

    def test_rfc_5_7_hello(self, apply_mask: MaskFunction) -> None:
        # RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        assert apply_mask(b"Hello", RFC_MASK) == bytes.fromhex("7f9f4d5158")
        assert apply_mask(bytes.fromhex("7f9f4d5158"), RFC_MASK) == b"Hello"

    def test_empty_input(self, apply_mask: MaskFunction) -> None:
        assert apply_mask(b"", RFC_MASK) == b""


class TestInputTypes:
    @pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=["bytes", "bytearray", "memoryview"])
    def test_data_types(self, apply_mask: MaskFunction, wrap: Callable[[bytes], object]) -> None:
        for size in (0, 1, 5, 8, 63, 1000):
            data = _random_bytes(size, size + 100)
            result = apply_mask(wrap(data), RFC_MASK)  # type: ignore[arg-type]
            assert result == naive_mask(data, RFC_MASK)
            assert type(result) is bytes

    @pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=["bytes", "bytearray", "memoryview"])
    def test_mask_types(self, apply_mask: MaskFunction, wrap: Callable[[bytes], object]) -> None:
        data = _random_bytes(37, 3)
        assert apply_mask(data, wrap(RFC_MASK)) == naive_mask(data, RFC_MASK)  # type: ignore[arg-type]

    def test_unaligned_memoryview_slice(self, apply_mask: MaskFunction) -> None:
        # A slice starting at an odd offset, as the parser's buffer slices may.
        backing = _random_bytes(1000, 4)
        for offset in range(1, 9):
            view = memoryview(backing)[offset : offset + 77]
            assert apply_mask(view, RFC_MASK) == naive_mask(backing[offset : offset + 77], RFC_MASK)

    def test_bytearray_slices_like_the_parser(self, apply_mask: MaskFunction) -> None:
        buffer = bytearray(b"\x82\x85" + RFC_MASK + naive_mask(b"hello", RFC_MASK))
        assert apply_mask(buffer[6:11], buffer[2:6]) == b"hello"

    def test_input_is_not_modified(self, apply_mask: MaskFunction) -> None:
        data = bytearray(_random_bytes(50, 5))
        before = bytes(data)
        apply_mask(data, RFC_MASK)
        assert data == before


class TestInvalidMask:
    @pytest.mark.parametrize("mask", [b"", b"\x01", b"\x01\x02\x03", b"\x01\x02\x03\x04\x05", b"\x00" * 8])
    @pytest.mark.parametrize("size", [1, 4, 100])
    def test_mask_not_four_bytes(self, apply_mask: MaskFunction, mask: bytes, size: int) -> None:
        with pytest.raises(ValueError, match="mask must be 4 bytes"):
            apply_mask(b"x" * size, mask)

    @pytest.mark.parametrize("mask", [b"", b"\x01\x02\x03", b"\x01\x02\x03\x04\x05"])
    def test_mask_not_four_bytes_with_empty_data(self, apply_mask: MaskFunction, mask: bytes) -> None:
        # Both implementations agree even when there is nothing to mask.
        with pytest.raises(ValueError, match="mask must be 4 bytes"):
            apply_mask(b"", mask)


class TestSelection:
    def test_apply_mask_is_the_fastest_available(self) -> None:
        if mask_module.c_apply_mask is not None:
            assert mask_module.SPEEDUPS is True
            assert mask_module.apply_mask is mask_module.c_apply_mask
        else:
            assert mask_module.SPEEDUPS is False
            assert mask_module.apply_mask is mask_module.python_apply_mask

    @pytest.mark.skipif(
        os.environ.get("TAKEOVER_REQUIRE_SPEEDUPS") != "1",
        reason="set TAKEOVER_REQUIRE_SPEEDUPS=1 to require the C extension",
    )
    def test_speedups_required(self) -> None:
        assert mask_module.SPEEDUPS is True
        assert mask_module.c_apply_mask is not None
