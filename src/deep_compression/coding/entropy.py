"""Empirical entropy of a histogram (the bound every coder is measured against)."""

from __future__ import annotations

import numpy as np

__all__ = ["entropy_bits"]


def entropy_bits(counts: np.ndarray) -> float:
    """Empirical (order-0) entropy in bits per symbol of a histogram; 0.0 if empty.

    >>> entropy_bits(np.array([1, 1, 2]))
    1.5
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())
