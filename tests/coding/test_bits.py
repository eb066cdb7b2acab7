"""Bit packing and varints against plain-Python references (strings of '0'/'1')."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deep_compression.coding.bits import (
    decode_varint,
    encode_varint,
    fixed_width,
    pack_codes,
    pack_fixed,
    unpack_fixed,
)
from deep_compression.errors import FormatError


def bits_to_bytes(bits: str) -> bytes:
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))


@given(st.integers(1, 16), st.lists(st.integers(0, 2**16 - 1), max_size=200))
@settings(max_examples=60, deadline=None)
def test_fixed_matches_bit_string(width: int, raw: list[int]) -> None:
    values = [v % (1 << width) for v in raw]
    expected = bits_to_bytes("".join(format(v, f"0{width}b") for v in values))
    packed = pack_fixed(np.array(values, dtype=np.int64), width)
    assert packed == expected
    assert unpack_fixed(packed, len(values), width, "t").tolist() == values


def test_fixed_width_is_ceil_log2() -> None:
    for a in range(1, 300):
        w = fixed_width(a)
        assert (1 << w) >= a and (w == 0 or (1 << (w - 1)) < a)


def test_fixed_rejects_wrong_length_and_padding() -> None:
    with pytest.raises(FormatError, match="must be 2 bytes"):
        unpack_fixed(b"\x00", 3, 5, "s")
    with pytest.raises(FormatError, match="padding"):
        unpack_fixed(b"\x00\x01", 3, 5, "s")  # 15 bits used, the 16th is set


@given(st.lists(st.integers(1, 15), min_size=1, max_size=100), st.randoms())
@settings(max_examples=50, deadline=None)
def test_pack_codes_matches_bit_string(lengths: list[int], rnd) -> None:
    codes = [rnd.randrange(1 << n) for n in lengths]
    packed, ends = pack_codes(np.array(codes), np.array(lengths))
    bits = "".join(format(c, f"0{n}b") for c, n in zip(codes, lengths))
    assert packed == bits_to_bytes(bits)
    assert ends.tolist() == np.cumsum(lengths).tolist()


@given(st.integers(0, 2**32 - 1))
def test_varint_round_trip(value: int) -> None:
    data = encode_varint(value)
    assert decode_varint(data + b"\xff", 0, "v") == (value, len(data))
    # Reference LEB128: 7-bit groups, least significant first.
    groups = []
    v = value
    while True:
        groups.append(v & 0x7F)
        v >>= 7
        if not v:
            break
    assert list(data) == [g | 0x80 for g in groups[:-1]] + [groups[-1]]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80", "truncated"),
        (b"\x80\x00", "overlong"),
        (b"\xff\xff\xff\xff\x7f", "exceeds"),
        (b"\x80\x80\x80\x80\x80\x01", "longer than 5"),
    ],
)
def test_varint_rejects(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        decode_varint(data, 0, "v")
