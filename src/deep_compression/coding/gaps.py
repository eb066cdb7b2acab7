"""Relative-index sparse coding: kept positions as a stream of small gaps, with fillers.

A sparse tensor is flattened in C (row-major) order. Its kept positions ``p_0 < p_1 < ...``
become the gaps ``g_i = p_i - p_{i-1}`` (with ``p_{-1} = -1``, so ``g_0 = p_0 + 1``), each
written in a field of ``b`` bits. The field holds ``2**b`` values; the largest,
``E = 2**b - 1``, is reserved as the *filler* (escape) symbol:

* a symbol ``v < E`` means "advance ``v + 1`` positions; a kept entry is here" (gaps
  ``1 .. E``);
* the symbol ``E`` means "advance ``E`` positions; nothing is here" (a filler).

A gap ``g`` therefore costs ``(g - 1) // E`` fillers followed by the symbol
``(g - 1) % E``. This is the paper's filler idea (Han et al. insert a zero weight at the
largest reachable position) with the filler marked in the gap stream instead of the
weight stream: the cluster-index stream keeps exactly one symbol per kept weight, its
alphabet stays the ``k`` centroids (a 5-bit codebook stays 5 bits wide), and a filler costs
one gap symbol only. Fillers are part of the gap stream and so are counted in every size.

With ``b = 1`` the stream degenerates to a bitmap (``0`` = kept, ``1`` = skipped) up to
the last kept position.

Pure numpy, no torch, no per-symbol Python loop.
"""

from __future__ import annotations

import numpy as np

from deep_compression.coding.coders import CODERS
from deep_compression.errors import ConfigError, FormatError

__all__ = [
    "MIN_GAP_BITS",
    "MAX_GAP_BITS",
    "check_gap_bits",
    "filler_symbol",
    "encode_gaps",
    "decode_gaps",
    "gap_histogram",
    "best_gap_bits",
]

MIN_GAP_BITS = 1
MAX_GAP_BITS = 16


def check_gap_bits(gap_bits: object, where: str = "gap_bits") -> int:
    """``gap_bits`` if it is an integer field width the format allows, else ConfigError."""
    ok = isinstance(gap_bits, int) and not isinstance(gap_bits, bool)
    if not ok or not MIN_GAP_BITS <= gap_bits <= MAX_GAP_BITS:  # type: ignore[operator]
        raise ConfigError(
            f"{where} must be an integer in {MIN_GAP_BITS}..{MAX_GAP_BITS}, got {gap_bits!r}"
        )
    return gap_bits  # type: ignore[return-value]


def filler_symbol(gap_bits: int) -> int:
    """The filler (escape) symbol ``2**gap_bits - 1``, also the distance a filler advances."""
    return (1 << check_gap_bits(gap_bits)) - 1


def encode_gaps(positions: np.ndarray, gap_bits: int) -> np.ndarray:
    """The gap stream of the kept flat positions.

    Args:
        positions: ``(kept,)`` strictly increasing non-negative integers.
        gap_bits: field width ``b`` in ``[1, 16]``.

    Returns:
        ``(kept + fillers,)`` int32 symbols in ``[0, 2**b - 1]``.

    >>> encode_gaps(np.array([0, 2, 40]), 3).tolist()  # gaps 1, 2, 38 = 7+7+7+7+7+3
    [0, 1, 7, 7, 7, 7, 7, 2]
    """
    e_sym = filler_symbol(gap_bits)
    positions = np.asarray(positions, dtype=np.int64)
    if positions.size == 0:
        return np.zeros(0, dtype=np.int32)
    gaps = np.diff(positions, prepend=-1)
    if gaps.min() < 1:
        raise ValueError("positions must be strictly increasing and >= 0")
    fillers, last = np.divmod(gaps - 1, e_sym)
    out = np.full(positions.size + int(fillers.sum()), e_sym, dtype=np.int32)
    out[np.cumsum(fillers + 1) - 1] = last  # each real symbol follows its fillers
    return out


def decode_gaps(
    symbols: np.ndarray, gap_bits: int, numel: int, kept: int, where: str
) -> np.ndarray:
    """Kept flat positions from a gap stream; the inverse of :func:`encode_gaps`.

    Args:
        symbols: ``(n,)`` integer gap symbols.
        gap_bits: field width ``b``.
        numel: number of elements of the tensor (positions must stay below it).
        kept: expected number of kept entries (non-filler symbols).

    Returns:
        ``(kept,)`` int64 strictly increasing positions in ``[0, numel)``.

    Raises:
        FormatError: a symbol out of range, a kept count that disagrees, a stream that
            ends with a filler (never written, so not canonical), or positions that run
            past the tensor.
    """
    e_sym = filler_symbol(gap_bits)
    s = np.asarray(symbols, dtype=np.int64)
    if s.size == 0:
        if kept:
            raise FormatError(f"{where}: empty gap stream but {kept} kept entries")
        return np.zeros(0, dtype=np.int64)
    if s.min() < 0 or s.max() > e_sym:
        raise FormatError(f"{where}: gap symbol out of range [0, {e_sym}]")
    real = s != e_sym
    n_real = int(np.count_nonzero(real))
    if n_real != kept:
        raise FormatError(
            f"{where}: gap stream holds {n_real} entries and {s.size - n_real} fillers, "
            f"but the header says {kept} entries are kept"
        )
    if not real[-1]:
        raise FormatError(f"{where}: gap stream ends with a filler")
    advance = np.where(real, s + 1, e_sym)
    pos = np.cumsum(advance) - 1  # monotonic, so only the last position can overrun
    if pos[-1] >= numel:
        raise FormatError(
            f"{where}: gap stream runs past the tensor (position {int(pos[-1])} "
            f">= {numel} elements)"
        )
    return pos[real]


def gap_histogram(positions: np.ndarray, gap_bits: int) -> np.ndarray:
    """Symbol counts ``(2**b,)`` of the gap stream of ``positions``, without building it."""
    e_sym = filler_symbol(gap_bits)
    gaps = np.diff(np.asarray(positions, dtype=np.int64), prepend=-1)
    fillers, last = np.divmod(gaps - 1, e_sym)
    counts = np.bincount(last, minlength=e_sym + 1)
    counts[e_sym] += int(fillers.sum())
    return counts


def best_gap_bits(
    positions: np.ndarray, coder: str, candidates: range = range(MIN_GAP_BITS, 13)
) -> int:
    """The gap field width that makes the gap stream of ``positions`` smallest.

    The cost of each candidate comes from its symbol histogram through the coder table
    (:meth:`~deep_compression.coding.coders.Coder.cost_bits`: ``n * b`` bits for
    ``fixed``, the Huffman code's exact payload plus its 4-bit table, the entropy plus a
    varint count table for ANS; ``best``: the smallest of them). Ties go to the narrower
    field. Not the paper's rule (5 bits for fc, 8 for conv), an option: on LeNet-300-100's
    fc1 (8% kept) 8 bits beat 5 by about 9%.
    """
    if len(positions) == 0:
        return candidates[0]
    coders = list(CODERS.values()) if coder == "best" else [CODERS[coder]]
    best, best_cost = candidates[0], float("inf")
    for b in candidates:
        counts = gap_histogram(positions, b)
        cost = min(c.cost_bits(counts) for c in coders)
        if cost < best_cost:
            best, best_cost = b, cost
    return best
