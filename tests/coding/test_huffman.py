"""Canonical length-limited Huffman: optimality against references, round trips, rejects."""

from __future__ import annotations

import heapq
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deep_compression.coding import huffman
from deep_compression.coding.streams import entropy_bits
from deep_compression.errors import FormatError


def heap_huffman_cost(counts: list[int]) -> int:
    """Total bits of an optimal (unlimited) prefix code: the sum of all merged weights."""
    heap = [c for c in counts if c > 0]
    if len(heap) == 1:
        return heap[0]
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        cost += a + b
        heapq.heappush(heap, a + b)
    return cost


def kraft_ok(lengths: np.ndarray) -> bool:
    used = lengths[lengths > 0].astype(float)
    return used.size == 1 or abs(np.sum(2.0**-used) - 1.0) < 1e-12


@given(st.lists(st.integers(0, 10_000), min_size=2, max_size=60))
@settings(max_examples=100, deadline=None)
def test_optimal_when_the_limit_does_not_bind(counts: list[int]) -> None:
    c = np.array(counts)
    if np.count_nonzero(c) == 0:
        return
    lengths = huffman.code_lengths(c)
    assert kraft_ok(lengths)
    assert ((lengths > 0) == (c > 0)).all()
    assert int((lengths.astype(int) * c).sum()) == heap_huffman_cost(counts)


@pytest.mark.parametrize("limit", [2, 3, 4])
def test_length_limited_optimum_by_brute_force(limit: int) -> None:
    rng = np.random.default_rng(limit)
    for _ in range(30):
        n = int(rng.integers(2, min(7, 2**limit) + 1))
        counts = rng.geometric(0.3, size=n) ** 3  # very skewed: the limit binds
        best = min(
            int(np.dot(ls, counts))
            for ls in itertools.product(range(1, limit + 1), repeat=n)
            if sum(2.0**-x for x in ls) <= 1.0
        )
        lengths = huffman.code_lengths(counts, max_length=limit)
        assert lengths.max() <= limit and kraft_ok(lengths)
        assert int(np.dot(lengths.astype(int), counts)) == best


def test_fibonacci_counts_respect_the_15_bit_limit() -> None:
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])  # an unlimited Huffman code would be 29 bits deep
    lengths = huffman.code_lengths(np.array(fib))
    assert lengths.max() == 15 and kraft_ok(lengths)


def test_canonical_codes_rfc1951_example() -> None:
    # RFC 1951 3.2.2: lengths (3, 3, 3, 3, 3, 2, 4, 4) for A..H.
    codes = huffman.canonical_codes(np.array([3, 3, 3, 3, 3, 2, 4, 4]))
    assert [format(int(c), f"0{n}b") for c, n in zip(codes, [3, 3, 3, 3, 3, 2, 4, 4])] == [
        "010", "011", "100", "101", "110", "00", "1110", "1111",
    ]  # fmt: skip


def reference_decode(segment: bytes, n: int, alphabet: int, chunk: int) -> list[int]:
    """Bit-by-bit decoder: read the table, build {code string: symbol}, walk the bits."""
    stream = huffman.parse_stream(segment, n, alphabet, chunk, "ref")
    lengths = stream.lengths
    codes = huffman.canonical_codes(lengths)
    table = {format(int(codes[s]), f"0{lengths[s]}b"): s for s in np.flatnonzero(lengths)}
    bits = "".join(format(b, "08b") for b in stream.payload)
    out, cur = [], ""
    for bit in bits:
        cur += bit
        if cur in table:
            out.append(int(table[cur]))
            cur = ""
            if len(out) == n:
                break
    return out


@given(
    st.integers(1, 40),
    st.integers(0, 1500),
    st.integers(1, 300),
    st.floats(0.05, 3.0),
    st.integers(0, 2**31),
)
@settings(max_examples=60, deadline=None)
def test_round_trip(alphabet: int, n: int, chunk: int, conc: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(alphabet, conc))
    symbols = rng.choice(alphabet, size=n, p=p)
    seg = huffman.encode_stream(symbols, alphabet, chunk)
    parsed = huffman.parse_stream(seg, n, alphabet, chunk, "t")
    assert huffman.decode_streams([parsed])[0].tolist() == symbols.tolist()
    assert reference_decode(seg, n, alphabet, chunk) == symbols.tolist()


def test_many_streams_decode_together_in_small_batches(monkeypatch) -> None:
    monkeypatch.setattr(huffman, "_MAX_BATCH_TABLE", 64)  # force several batches
    rng = np.random.default_rng(1)
    streams, parsed = [], []
    for i in range(12):
        a = int(rng.integers(2, 70))
        s = rng.integers(0, a, size=int(rng.integers(0, 900)))
        streams.append(s)
        parsed.append(huffman.parse_stream(huffman.encode_stream(s, a, 50), s.size, a, 50, f"{i}"))
    for got, want in zip(huffman.decode_streams(parsed), streams):
        assert got.tolist() == want.tolist()


def test_within_three_percent_of_entropy_on_a_large_layer() -> None:
    # Cluster indices of a 5-bit layer: a bell-shaped histogram over 32 centroids.
    rng = np.random.default_rng(0)
    symbols = np.clip(np.round(rng.normal(15.5, 6.0, size=200_000)), 0, 31).astype(int)
    seg = huffman.encode_stream(symbols, 32, 1 << 14)
    bits = 8 * len(seg) / symbols.size
    h = entropy_bits(np.bincount(symbols))
    assert h <= bits <= 1.03 * h


def test_one_bit_floor_on_a_skewed_stream() -> None:
    # 95% ones: entropy 0.29 bits, but a Huffman code cannot spend less than 1 bit.
    symbols = (np.random.default_rng(0).random(10_000) < 0.95).astype(int)
    seg = huffman.encode_stream(symbols, 2, 1 << 14)
    assert 8 * len(seg) / symbols.size == pytest.approx(1.0, abs=0.01)


def table(lengths: list[int]) -> bytes:
    return huffman.encode_table(np.array(lengths, dtype=np.uint8))


@pytest.mark.parametrize(
    ("segment", "n", "message"),
    [
        (table([1, 1, 1]) + b"\x00", 3, "over-subscribed"),
        (table([1, 2]) + b"\x00", 2, "incomplete"),
        (table([2]) + b"\x00", 1, "1-bit code"),
        (bytes([3, 0x11, 0x00]) + b"\x00", 2, "ends with an unused symbol"),
        (bytes([1, 0x11]) + b"\x00", 2, "padding nibble"),
        (bytes([9]) + b"\x00" * 5, 2, "outside"),
        (table([1, 1]), 5, "cannot hold"),
        (table([1, 1]) + b"\x01\x00\x00\x00" + b"\x00" * 4, 20, "chunk bit length outside"),
    ],
)
def test_malformed_tables(segment: bytes, n: int, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        huffman.parse_stream(segment, n, 4, 10, "t")


def test_payload_errors_are_caught_by_the_chunk_checks() -> None:
    symbols = np.random.default_rng(0).integers(0, 8, size=100)
    seg = huffman.encode_stream(symbols, 8, 30)
    parsed = huffman.parse_stream(seg, 100, 8, 30, "t")
    chunk_table_at = len(seg) - len(parsed.payload) - 4 * parsed.chunk_bits.size
    # A stored chunk length one bit off: that chunk no longer ends where it should.
    bad = bytearray(seg)
    bad[chunk_table_at] ^= 1
    with pytest.raises(FormatError, match="chunk does not decode"):
        huffman.decode_streams([huffman.parse_stream(bytes(bad), 100, 8, 30, "t")])
    # A set padding bit after the last code.
    pad = 8 * len(parsed.payload) - int(
        np.sum(huffman.code_lengths(np.bincount(symbols, minlength=8))[symbols])
    )
    assert pad > 0
    padded = seg[:-1] + bytes([seg[-1] | 1])
    with pytest.raises(FormatError, match="padding"):
        huffman.decode_streams([huffman.parse_stream(padded, 100, 8, 30, "t")])
