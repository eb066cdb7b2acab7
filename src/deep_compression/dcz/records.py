"""The tensor records a ``.dcz`` file is made of, shared by the writer and the reader.

Three kinds, one per encoding:

* :class:`DenseTensor`: raw little-endian values (biases, layers that were not pruned);
* :class:`SparseTensor`: pruned, not quantized: kept positions + float32 values (the "P"
  stage as a real file);
* :class:`QuantizedTensor`: pruned and quantized: float32 codebook + kept positions +
  cluster indices (the "P+Q" file with the ``fixed`` coder, "P+Q+H" with ``huffman``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["DenseTensor", "SparseTensor", "QuantizedTensor", "Tensor", "to_dense"]


@dataclass(frozen=True)
class DenseTensor:
    """A tensor stored as is. ``array``: any shape, a dtype of ``format.DTYPES``."""

    name: str
    array: np.ndarray


@dataclass(frozen=True)
class SparseTensor:
    """A pruned float32 tensor.

    Attributes:
        shape: the tensor's shape.
        positions: ``(kept,)`` strictly increasing flat (C-order) indices of kept entries.
        values: ``(kept,)`` float32 values at those positions.
        gap_bits: gap field width ``b`` in ``[1, 16]`` (used when positions are written
            as a gap stream).
    """

    name: str
    shape: tuple[int, ...]
    positions: np.ndarray
    values: np.ndarray
    gap_bits: int


@dataclass(frozen=True)
class QuantizedTensor:
    """A pruned, weight-shared float32 tensor: ``w[positions] = codebook[indices]``.

    Attributes:
        shape: the tensor's shape.
        positions: ``(kept,)`` strictly increasing flat (C-order) indices of kept entries.
        indices: ``(kept,)`` cluster index of each kept entry, in ``[0, k)``.
        codebook: ``(k,)`` float32 centroids.
        gap_bits: gap field width ``b`` in ``[1, 16]`` (used when positions are written
            as a gap stream).
    """

    name: str
    shape: tuple[int, ...]
    positions: np.ndarray
    indices: np.ndarray
    codebook: np.ndarray
    gap_bits: int


Tensor = DenseTensor | SparseTensor | QuantizedTensor


def to_dense(record: Tensor) -> np.ndarray:
    """The dense array a record stands for (float32 for sparse and quantized)."""
    if isinstance(record, DenseTensor):
        return record.array
    out = np.zeros(math.prod(record.shape), dtype=np.float32)
    if isinstance(record, SparseTensor):
        out[record.positions] = record.values
    else:
        out[record.positions] = record.codebook[record.indices]
    return out.reshape(record.shape)
