"""Find the sparse / few-valued structure of a plain dense array, losslessly.

A plain state dict whose weights were pruned and quantized (what ``deep-compression
decode`` writes) holds dense float32 arrays that are mostly zero and take at most ``k``
distinct values. :func:`record_from_array` gives back the record that stores such an array
in the fewest bytes among :class:`DenseTensor`, :class:`SparseTensor` and
:class:`QuantizedTensor`, and that decodes to the *same bits*:

* **zeros**: an entry is "not kept" only when its bits are those of ``+0.0``. A ``-0.0``
  is kept, with the value ``-0.0`` (the decoder fills unkept entries with ``+0.0``, so
  treating ``-0.0`` as pruned would flip its sign bit);
* **codebook**: the distinct kept values compared by their bits (so ``-0.0`` and each NaN
  payload are values of their own), in increasing order of value (NaNs last), at most
  ``MAX_CODEBOOK = 2**16`` of them; the indices point into it.

The choice between the three records is by estimated size (float payload width, an order-0
estimate of the index stream, the cheapest gap stream of the positions), never by
guessing: a float32 array with many distinct values stays dense or sparse. Non-float32
arrays are returned dense. numpy only.
"""

from __future__ import annotations

import math

import numpy as np

from deep_compression.coding.coders import CODERS
from deep_compression.coding.entropy import entropy_bits
from deep_compression.coding.gaps import best_gap_bits, gap_histogram
from deep_compression.dcz.format import MAX_CODEBOOK
from deep_compression.dcz.records import DenseTensor, QuantizedTensor, SparseTensor, Tensor

__all__ = ["record_from_array"]


def _float_width(bits: np.ndarray) -> int:
    """Bytes per stored float: 2 when every value survives float16 exactly (as the writer
    decides), else 4."""
    f32 = bits.view("<f4")
    if f32.size and np.isfinite(f32).all():
        back = f32.astype("<f2").astype("<f4").view("<u4")
        if np.array_equal(back, bits):
            return 2
    return 4


def record_from_array(
    name: str, array: np.ndarray, gap_bits: int | None = None, coder: str = "huffman"
) -> Tensor:
    """The smallest lossless record of ``array`` (any shape).

    Args:
        name: the record's name.
        array: the dense tensor; float32 arrays are analysed, others returned dense.
        gap_bits: gap width of a sparse or quantized record; ``None``: the width whose
            gap stream is smallest under ``coder`` (an order-0 coder, or ``"best"``).

    Returns:
        a record whose decoded array has exactly the bits of ``array`` (``to_dense(r)``
        viewed as ``uint32`` equals ``array`` viewed as ``uint32``).
    """
    arr = np.asarray(array)
    if arr.dtype.kind != "f" or arr.dtype.itemsize != 4:
        return DenseTensor(name, arr)
    shape = tuple(int(d) for d in arr.shape)
    numel = math.prod(shape)
    bits = np.ascontiguousarray(arr, dtype="<f4").reshape(-1).view("<u4")
    if numel == 0:
        return DenseTensor(name, arr)
    positions = np.flatnonzero(bits != 0)  # +0.0 alone is "not kept"
    kept = positions.size
    kept_bits = bits[positions]
    dense_cost = numel * _float_width(bits)

    pos_cost = 0.0
    b = 1
    if 0 < kept < numel:
        b = gap_bits or best_gap_bits(positions, coder)
        pos_cost = CODERS["huffman"].cost_bits(gap_histogram(positions, b)) / 8
    sparse_cost = pos_cost + kept * _float_width(kept_bits)

    uniq, inverse = np.unique(kept_bits, return_inverse=True)
    quant_cost = float("inf")
    if 1 <= uniq.size <= MAX_CODEBOOK:
        counts = np.bincount(inverse, minlength=uniq.size)
        idx_cost = kept * entropy_bits(counts) / 8 + min(uniq.size, 2 * kept) / 2
        quant_cost = pos_cost + uniq.size * _float_width(uniq) + idx_cost

    best = min(dense_cost, sparse_cost, quant_cost)
    if best == dense_cost:
        return DenseTensor(name, arr)
    if best == sparse_cost:
        return SparseTensor(name, shape, positions, kept_bits.view("<f4").copy(), b)
    # Centroids in increasing order of value (NaNs last); ties cannot happen except
    # between -0.0 and +0.0, and +0.0 is never kept.
    order = np.argsort(uniq.view("<f4"), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    codebook = uniq[order].view("<f4").copy()
    return QuantizedTensor(name, shape, positions, rank[inverse], codebook, b)
