"""Entropy-constrained scalar quantization of one layer: the result type, the rate model
and :func:`rd_quantize` (the method is described in :mod:`.rdq`). Pure numpy (no torch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from deep_compression.errors import ConfigError
from deep_compression.quantize.rdq_lloyd import group_importance, lloyd_sorted

__all__ = [
    "MAX_CODEWORDS",
    "RDQuantization",
    "check_rd_arguments",
    "initial_step",
    "model_bits",
    "rd_quantize",
]


# Index buffers and the file allow far more; 256 codewords (int16 indices) is already
# finer than any step the rate term chooses on the LeNets (a few dozen codewords).
MAX_CODEWORDS = 4096


@dataclass(frozen=True)
class RDQuantization:
    """The result of :func:`rd_quantize` for one layer of ``n`` weights.

    Attributes:
        codebook: ``(k,)`` float64 non-zero codewords, ascending (``k`` may be 0).
        indices: ``(n,)`` int64 codeword index of each weight, 0 where ``mask`` is False.
        mask: ``(n,)`` bool, True where the weight is not quantized to zero.
        distortion: ``sum_i h_i (w_i - q_i)^2`` of the result.
        rate_bits: :func:`model_bits` of the result (the Lagrangian's rate).
        iterations: Lloyd iterations run.
    """

    codebook: np.ndarray
    indices: np.ndarray
    mask: np.ndarray
    distortion: float
    rate_bits: float
    iterations: int

    def values(self) -> np.ndarray:
        """``(n,)`` float64 quantized weights (0 where not kept)."""
        if self.codebook.size == 0:
            return np.zeros(self.mask.shape)
        return np.where(self.mask, self.codebook[self.indices], 0.0)

    @classmethod
    def from_labels(
        cls, x: np.ndarray, h: np.ndarray, c: np.ndarray, labels: np.ndarray, iterations: int
    ) -> RDQuantization:
        """The result of assigning the ``(n,)`` weights ``x`` to codewords ``c``.

        ``c`` is ascending and may contain 0 (the pruned weights); ``labels`` ``(n,)``
        index ``c``; ``h`` is the importance (a scalar or ``(n,)``) the distortion is
        weighted by.
        """
        zero = np.flatnonzero(c == 0.0)
        if zero.size:
            z = int(zero[0])
            mask = labels != z
            codebook = np.delete(c, z)
            indices = np.where(labels > z, labels - 1, labels)
            indices[~mask] = 0
        else:
            mask = np.ones(x.size, dtype=bool)
            codebook, indices = c, labels
        q = np.where(mask, codebook[indices] if codebook.size else 0.0, 0.0)
        distortion = float(np.sum(h * (x - q) ** 2))
        rate = model_bits(mask, indices, codebook.size)
        return cls(codebook, indices.astype(np.int64), mask, distortion, rate, iterations)


def model_bits(mask: np.ndarray, indices: np.ndarray, k: int, codebook_bits: int = 16) -> float:
    """The rate model of a quantized layer in the ``.dcz`` file (module docstring), in bits.

    ``N h2(d)`` for the positions + ``K H(q)`` for the cluster indices of the ``K`` kept
    weights + ``codebook_bits * k`` for the codebook.

    Args:
        mask: ``(n,)`` bool, the kept weights.
        indices: ``(n,)`` ints in ``[0, k)`` (read where ``mask`` is True).
        k: codebook size.
        codebook_bits: bits per stored centroid (16 for float16, 32 for float32).
    """
    n = mask.size
    kept = int(np.count_nonzero(mask))
    bits = codebook_bits * k
    if kept and kept < n:
        d = kept / n
        bits += n * -(d * math.log2(d) + (1 - d) * math.log2(1 - d))
    if kept:
        counts = np.bincount(indices[mask], minlength=k).astype(np.float64)
        p = counts[counts > 0] / kept
        bits += kept * float(-(p * np.log2(p)).sum())
    return bits


def initial_step(lam: float, importance: float) -> float:
    """The high-rate step ``sqrt(6 lam / (h ln 2))`` of the module docstring."""
    return math.sqrt(6.0 * lam / (importance * math.log(2.0)))


def check_rd_arguments(lam: float, max_iter: int, max_codewords: int) -> None:
    """Raise :class:`ConfigError` naming the argument unless ``lam >= 0`` is finite,
    ``max_iter >= 1`` and ``1 <= max_codewords <= MAX_CODEWORDS`` are integers."""
    if not (isinstance(lam, int | float) and math.isfinite(lam) and lam >= 0):
        raise ConfigError(f"lam must be a finite number >= 0, got {lam!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ConfigError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    bad = isinstance(max_codewords, bool) or not isinstance(max_codewords, int)
    if bad or not 1 <= max_codewords <= MAX_CODEWORDS:
        raise ConfigError(
            f"max_codewords must be an integer in 1..{MAX_CODEWORDS}, got {max_codewords!r}"
        )


def _grid(x: np.ndarray, step: float, max_codewords: int, zero: bool) -> np.ndarray:
    """Uniform codewords ``j * step`` covering ``x`` (``j != 0`` unless ``zero``)."""
    lo, hi = float(x.min()), float(x.max())
    span = max(abs(lo), abs(hi))
    if span == 0.0:
        return np.zeros(1)
    # At most max_codewords levels: widen the step if the range needs more.
    step = max(step, 2 * span / max(max_codewords - 1, 1), span * 1e-9)
    j = np.arange(math.floor(lo / step), math.ceil(hi / step) + 1)
    grid = j * step
    return grid if zero else grid[j != 0]


def rd_quantize(
    w: npt.ArrayLike,
    lam: float,
    *,
    importance: float | npt.ArrayLike = 1.0,
    step: float | None = None,
    init_codebook: npt.ArrayLike | None = None,
    zero_codeword: bool = True,
    max_codewords: int = 256,
    max_iter: int = 100,
    max_groups: int = 64,
) -> RDQuantization:
    """Entropy-constrained scalar quantization of one layer's weights (module docstring).

    Args:
        w: ``(n,)`` finite weights (any shape is flattened, C order).
        lam: Lagrange multiplier, distortion units per bit, ``>= 0``.
        importance: ``h``: a scalar (the same for every weight) or ``(n,)`` non-negative
            per-weight distortion weights.
        step: the initial grid step; default :func:`initial_step` of ``lam`` and the mean
            importance (with ``lam = 0`` it must be given, or ``init_codebook``).
        init_codebook: explicit starting codewords instead of the grid (non-zero ones;
            zero is added when ``zero_codeword``).
        zero_codeword: include the codeword 0 (fixed at 0). Without it every weight is kept.
        max_codewords: at most this many codewords in the initial grid.
        max_iter: at most this many Lloyd iterations (stops at a fixed point).
        max_groups: per-weight importances with more distinct values than this are
            binned into this many log-spaced groups (see
            :func:`~.rdq_lloyd.group_importance`).

    Returns:
        The :class:`RDQuantization`.

    Raises:
        ConfigError: bad arguments or non-finite weights.
    """
    check_rd_arguments(lam, max_iter, max_codewords)
    x = np.ravel(np.asarray(w, dtype=np.float64))
    n = x.size
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return RDQuantization(np.zeros(0), empty, np.zeros(0, bool), 0.0, 0.0, 0)
    if not np.isfinite(x).all():
        raise ConfigError("rd_quantize: weights contain NaN or infinity")
    h_arr = np.asarray(importance, dtype=np.float64)
    scalar = h_arr.ndim == 0
    if not scalar and h_arr.shape != (n,):
        raise ConfigError(f"importance must be a scalar or shape ({n},), got {h_arr.shape}")
    if not np.isfinite(h_arr).all() or (h_arr < 0).any():
        raise ConfigError("importance must be finite and >= 0")
    h_mean = float(h_arr.mean())
    if init_codebook is not None:
        c = np.unique(np.asarray(init_codebook, dtype=np.float64))
        c = c[c != 0] if zero_codeword else c
        if zero_codeword:
            c = np.union1d(c, [0.0])
    else:
        if step is None:
            if lam == 0 or h_mean == 0:
                raise ConfigError("rd_quantize: lam = 0 needs step or init_codebook")
            step = initial_step(lam, h_mean)
        if not (math.isfinite(step) and step > 0):
            raise ConfigError(f"step must be a finite number > 0, got {step!r}")
        c = _grid(x, float(step), max_codewords, zero_codeword)
    if c.size == 0:
        raise ConfigError("rd_quantize: no codewords to start from")
    if scalar:
        group, hg = np.zeros(n, dtype=np.int64), np.array([float(h_arr)])
    else:
        group, hg = group_importance(h_arr, max_groups)
    c, labels, it = lloyd_sorted(x, group, hg, lam, c, zero_codeword, max_iter)
    return RDQuantization.from_labels(x, h_arr, c, labels, it)
