"""Relative-index coding against a per-entry reference and hand-worked examples."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deep_compression.coding.gaps import decode_gaps, encode_gaps, filler_symbol
from deep_compression.errors import FormatError


def reference_encode(positions: list[int], bits: int) -> list[int]:
    """Walk the positions one by one, inserting a filler whenever the gap does not fit."""
    escape = (1 << bits) - 1
    out, prev = [], -1
    for p in positions:
        gap = p - prev
        while gap > escape:  # a real symbol can only say 1 .. escape
            out.append(escape)
            gap -= escape
        out.append(gap - 1)
        prev = p
    return out


@given(st.integers(1, 9), st.sets(st.integers(0, 3000), max_size=200))
@settings(max_examples=80, deadline=None)
def test_matches_reference_and_round_trips(bits: int, kept: set[int]) -> None:
    positions = sorted(kept)
    symbols = encode_gaps(np.array(positions, dtype=np.int64), bits)
    assert symbols.tolist() == reference_encode(positions, bits)
    assert decode_gaps(symbols, bits, 3001, len(positions), "t").tolist() == positions


def test_hand_example_of_the_spec() -> None:
    # docs/FORMAT.md: gap_bits 2, kept 1, 3, 4, 15 -> gaps 2, 2, 1, 11 = 3+3+3+2
    assert encode_gaps(np.array([1, 3, 4, 15]), 2).tolist() == [1, 1, 0, 3, 3, 3, 1]


def test_one_bit_gaps_are_an_inverted_bitmap() -> None:
    mask = np.random.default_rng(0).random(500) < 0.3
    mask[-1] = True
    symbols = encode_gaps(np.flatnonzero(mask), 1)
    assert symbols.tolist() == (~mask).astype(int).tolist()


def test_filler_count_for_a_long_gap() -> None:
    # A gap of 100 with 5-bit fields (escape 31): 3 fillers (93) then symbol 6 (gap 7).
    assert encode_gaps(np.array([99]), 5).tolist() == [31, 31, 31, 6]
    assert filler_symbol(5) == 31


@pytest.mark.parametrize(
    ("symbols", "numel", "kept", "message"),
    [
        ([0, 31, 31], 100, 1, "ends with a filler"),
        ([0, 31, 31, 5], 50, 2, "runs past the tensor"),
        ([0, 1, 2], 100, 2, "header says 2"),
        ([], 100, 1, "empty gap stream"),
        ([0, 40], 100, 2, "out of range"),
    ],
)
def test_malformed_streams(symbols: list[int], numel: int, kept: int, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        decode_gaps(np.array(symbols, dtype=np.int64), 5, numel, kept, "t")


@pytest.mark.parametrize("coder", ["fixed", "huffman", "ans", "best"])
def test_best_gap_bits_is_near_the_true_minimum(coder: str) -> None:
    from deep_compression.coding.gaps import best_gap_bits
    from deep_compression.coding.streams import CODERS, encode_stream

    rng = np.random.default_rng(3)
    # Clustered sparsity: dense stretches and long empty ones, so the best width is not
    # the smallest or the largest candidate.
    mask = np.repeat(rng.random(400) < 0.3, 50) & (rng.random(20_000) < 0.4)
    positions = np.flatnonzero(mask)

    def size(b: int) -> int:
        symbols = encode_gaps(positions, b)
        coders = CODERS if coder == "best" else (coder,)
        return min(len(encode_stream(symbols, 1 << b, c, 1 << 14)) for c in coders)

    sizes = {b: size(b) for b in range(1, 13)}
    chosen = best_gap_bits(positions, coder)
    assert sizes[chosen] <= min(sizes.values()) + 8, (chosen, sizes)
