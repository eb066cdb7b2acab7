"""pack_codes across its internal blocks, long codes and stray high bits, against a bit string."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deep_compression.coding import bits


def reference(codes: list[int], lengths: list[int]) -> bytes:
    text = "".join(format(c & ((1 << n) - 1), f"0{n}b") for c, n in zip(codes, lengths))
    text += "0" * (-len(text) % 8)
    return bytes(int(text[i : i + 8], 2) for i in range(0, len(text), 8))


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64])
@given(data=st.lists(st.tuples(st.integers(0, 2**30), st.integers(1, 24)), max_size=150))
@settings(max_examples=40, deadline=None)
def test_blocks_share_boundary_bytes_correctly(block: int, data) -> None:
    # Tiny blocks: every block boundary falls inside a byte somewhere. The codes carry
    # bits above their length, which must be ignored.
    codes, lengths = [c for c, _ in data], [n for _, n in data]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bits, "_PACK_BLOCK", block)
        packed, ends = bits.pack_codes(np.array(codes, dtype=np.int64), np.array(lengths))
    assert packed == reference(codes, lengths)
    assert ends.tolist() == np.cumsum(lengths, dtype=np.int64).tolist()


def test_a_long_stream_over_many_default_blocks() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 16, 3 * bits._PACK_BLOCK + 12_345)
    codes = rng.integers(0, 1 << 15, lengths.size)
    packed, ends = bits.pack_codes(codes, lengths)
    # Reference via numpy bit arrays (independent of the window arithmetic).
    total = int(ends[-1])
    bitarr = np.zeros(total, dtype=np.uint8)
    starts = ends - lengths
    for j in range(15):
        sel = lengths > j
        bitarr[starts[sel] + j] = (codes[sel] >> (lengths[sel] - 1 - j)) & 1
    assert packed == np.packbits(bitarr).tobytes()
