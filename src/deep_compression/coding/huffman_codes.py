"""Huffman code construction: optimal length-limited code lengths from symbol counts
(package-merge, Larmore and Hirschberg 1990) and canonical codes from the lengths alone
(RFC 1951, section 3.2.2). Deterministic functions of their inputs, so a file's code is
fixed by its symbol counts.

:mod:`deep_compression.coding.huffman` builds its streams on these (and re-exports them).
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_CODE_LENGTH", "code_lengths", "canonical_codes"]

MAX_CODE_LENGTH = 15  # fits a 4-bit table entry, like DEFLATE


def code_lengths(counts: np.ndarray, max_length: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Optimal length-limited prefix-code lengths for the symbol ``counts``.

    Args:
        counts: ``(A,)`` non-negative integer occurrence counts.
        max_length: longest allowed code, in bits.

    Returns:
        ``(A,)`` uint8 code lengths; 0 for symbols that never occur.

    Raises:
        ValueError: more distinct symbols than ``2**max_length`` codes can hold.

    >>> code_lengths(np.array([10, 1, 1, 2, 0])).tolist()
    [1, 3, 3, 2, 0]
    """
    counts = np.asarray(counts, dtype=np.int64)
    lengths = np.zeros(counts.size, dtype=np.uint8)
    used = np.flatnonzero(counts > 0)
    n = used.size
    if n == 0:
        return lengths
    if n == 1:
        lengths[used] = 1
        return lengths
    if n > 1 << max_length:
        raise ValueError(f"{n} distinct symbols do not fit codes of <= {max_length} bits")
    # Leaves in ascending weight; equal weights in ascending symbol order (deterministic).
    order = used[np.argsort(counts[used], kind="stable")]
    leaves = counts[order]
    # Package-merge: list 1 holds the leaves; list j+1 merges the leaves with the pairs
    # ("packages") of consecutive items of list j. Remember which items are leaves.
    is_leaf_per_list = [np.ones(n, dtype=bool)]
    current = leaves
    for _ in range(max_length - 1):
        half = current.size // 2
        packages = current[0 : 2 * half : 2] + current[1 : 2 * half : 2]
        weights = np.concatenate([leaves, packages])
        # Stable sort of [leaves, packages]: on equal weight a leaf comes first.
        merge = np.argsort(weights, kind="stable")
        current = weights[merge]
        is_leaf_per_list.append(merge < n)
    # The 2n-2 cheapest items of the last list form the code. A selected package of list
    # j+1 stands for two items of list j, and the selected items of every list are a
    # prefix of it, so walking back we only need how many leaves each prefix holds. The
    # leaves in a prefix are the lightest ones; each selection adds one bit to them.
    depth = np.zeros(n, dtype=np.int64)
    take = 2 * n - 2
    for is_leaf in reversed(is_leaf_per_list):
        n_leaves = int(np.count_nonzero(is_leaf[:take]))
        depth[:n_leaves] += 1
        take = 2 * (take - n_leaves)
    lengths[order] = depth
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code of each symbol from the code lengths (RFC 1951, 3.2.2).

    Shorter codes come first; codes of equal length are consecutive integers in symbol
    order.

    >>> canonical_codes(np.array([2, 1, 3, 3])).tolist()  # 10, 0, 110, 111
    [2, 0, 6, 7]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    max_len = int(lengths.max()) if lengths.size else 0
    bl_count = np.bincount(lengths, minlength=max_len + 1)
    bl_count[0] = 0
    next_code = np.zeros(max_len + 2, dtype=np.int64)
    code = 0
    for bits in range(1, max_len + 1):
        code = (code + int(bl_count[bits - 1])) << 1
        next_code[bits] = code
    # Rank of each symbol among the symbols of its length, in symbol order.
    order = np.lexsort((np.arange(lengths.size), lengths))
    sorted_len = lengths[order]
    first_of_len = np.searchsorted(sorted_len, sorted_len, side="left")
    rank = np.arange(lengths.size) - first_of_len
    codes = np.zeros(lengths.size, dtype=np.int64)
    codes[order] = next_code[sorted_len] + rank
    codes[lengths == 0] = 0
    return codes.astype(np.uint32)
