"""ANS through constriction: entropy targets, the spec's reference decoder, rejects."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deep_compression.coding import ans
from deep_compression.coding.bits import decode_varint
from deep_compression.coding.streams import entropy_bits
from deep_compression.errors import FormatError


def spec_decode(segment: bytes, n: int, alphabet: int) -> list[int]:
    """docs/FORMAT.md section 6.3 in plain Python integers and IEEE doubles."""
    m, pos = decode_varint(segment, 0, "ref")
    counts = []
    for _ in range(m):
        c, pos = decode_varint(segment, pos, "ref")
        counts.append(c)
    K = max(alphabet, 2)
    counts += [0] * (K - m)
    scale = float((1 << 24) - K) / float(sum(counts))
    cdf, prefix = [], 0
    for i, c in enumerate(counts):
        cdf.append(int(float(prefix) * scale) + i)
        prefix += c
    cdf.append(1 << 24)
    words = [int.from_bytes(segment[i : i + 4], "little") for i in range(pos, len(segment), 4)]
    state = 0
    if words:
        state = words.pop()
        while words and state < 1 << 32:
            state = (state << 32) | words.pop()
    out = []
    for _ in range(n):
        q = state & ((1 << 24) - 1)
        s = max(i for i in range(K) if cdf[i] <= q)
        state = (state >> 24) * (cdf[s + 1] - cdf[s]) + (q - cdf[s])
        if state < 1 << 32 and words:
            state = (state << 32) | words.pop()
        out.append(s)
    assert state == 0 and not words
    return out


@given(st.integers(1, 30), st.integers(0, 800), st.floats(0.05, 3.0), st.integers(0, 2**31))
@settings(max_examples=60, deadline=None)
def test_round_trip_and_spec_decoder(alphabet: int, n: int, conc: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    symbols = rng.choice(alphabet, size=n, p=rng.dirichlet(np.full(alphabet, conc)))
    seg = ans.encode_stream(symbols, alphabet)
    assert ans.decode_stream(seg, n, alphabet, "t").tolist() == symbols.tolist()
    if n:
        assert spec_decode(seg, n, alphabet) == symbols.tolist()


def test_within_one_percent_of_entropy_and_no_one_bit_floor() -> None:
    rng = np.random.default_rng(0)
    layer = np.clip(np.round(rng.normal(15.5, 6.0, size=200_000)), 0, 31).astype(int)
    skewed = (rng.random(200_000) < 0.95).astype(int)
    for symbols, alphabet in ((layer, 32), (skewed, 2)):
        bits = 8 * len(ans.encode_stream(symbols, alphabet)) / symbols.size
        h = entropy_bits(np.bincount(symbols))
        assert h <= bits <= 1.01 * h


def test_rejects() -> None:
    symbols = np.array([0, 1, 1, 2, 1, 0, 2, 2, 2])
    seg = ans.encode_stream(symbols, 3)
    with pytest.raises(FormatError, match="sum to 9"):
        ans.decode_stream(seg, 8, 3, "t")
    with pytest.raises(FormatError, match="whole number of words"):
        ans.decode_stream(seg + b"\x01", 9, 3, "t")
    with pytest.raises(FormatError, match="invalid ANS data"):
        ans.decode_stream(seg + b"\x00\x00\x00\x00", 9, 3, "t")
    with pytest.raises(FormatError, match="does not end"):
        ans.decode_stream(seg + b"\x07\x00\x00\x00", 9, 3, "t")
    with pytest.raises(FormatError, match="zero count"):
        ans.decode_stream(bytes([2, 5, 0]), 5, 3, "t")
    with pytest.raises(FormatError, match="outside"):
        ans.decode_stream(bytes([4, 1, 1, 1, 1]), 4, 3, "t")
