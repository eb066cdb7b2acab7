"""Rate-distortion optimised scalar quantization of one layer (entropy-constrained Lloyd).

Why: without retraining, the quantizer alone decides what a file costs. k-means with a
fixed ``k`` minimises the squared error for a given *number* of codewords, not for a given
*number of bits*; a magnitude cut decides sparsity without asking what the zeros save.
Entropy-constrained scalar quantization (ECSQ; Chou, Lookabaugh, Gray 1989; for networks
Choi, El-Khamy, Lee 2017) minimises the Lagrangian ::

    J = D + lam * R,   D = sum_i h_i (w_i - q_i)^2,   R = sum_i len(q_i)   (bits)

where ``h_i >= 0`` is the importance of weight ``i`` (a constant per layer by default; a
per-input-feature diagonal Hessian proxy with calibration data) and ``len(c)`` the code
length of codeword ``c``. Zero is one codeword among the others, with a short code because
it is frequent: a weight goes to zero exactly when the distortion that adds is worth less
than the bits it saves. Sparsity comes out of the rate term, not from a threshold.

The rate model is the one of the ``.dcz`` file (docs/FORMAT.md, ``enc = "quantized"``).
A quantized layer of ``N`` weights, ``Z`` of them zero and ``K = N - Z`` kept, is stored as

* the kept positions, a stream of relative-index gaps coded with an order-0 entropy
  coder (Huffman or ANS). For positions drawn independently with density ``d = K / N``
  the gaps are geometric, and an ideal order-0 code of the gaps costs ``N * h2(d)`` bits
  (``h2`` the binary entropy): the same as coding a zero/non-zero flag per weight with
  probability ``d``;
* the cluster index of each kept weight, order-0 entropy coded: ``K * H(q)`` bits for the
  histogram ``q`` of the non-zero codewords;
* the codebook, ``k`` floats (16 bits each when float16-exact, which the torch side
  arranges), plus small per-stream tables (constant, ignored here).

``N h2(d) + K H(q) = N H(p)`` with ``p`` the histogram over the ``k + 1`` codewords
*including zero*, so the file's cost is that of one entropy-coded alphabet in which zero
is a codeword of probability ``1 - d``: ``len(c) = -log2 p(c)``. That is what the Lloyd
iterations below use. The model ignores what order-0 coding of the real gap stream adds
(fillers, Huffman's integer code lengths, positions that are not independent); the
benchmark measures real files.

Each iteration (i) assigns every weight to the codeword of least ``h (w - c)^2 + lam len(c)``,
(ii) moves every non-zero codeword to the ``h``-weighted mean of its weights (zero stays
zero), (iii) sets ``len(c) = -log2(count(c) / N)``. Each step lowers ``J``, so it
converges; codewords that lose all their weights are dropped (their code would be
infinitely long). With ``lam = 0`` and no zero codeword this is plain Lloyd.

The iterations start from a uniform grid whose step follows from ``lam``: for an
entropy-coded uniform quantizer at high rate, ``D = h step^2 / 12`` per weight and
``dR/dstep = -1 / (step ln 2)``, so ``-dD/dR = lam`` at ``step = sqrt(6 lam / (h ln 2))``.

Pure numpy (no torch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from deep_compression.errors import ConfigError

__all__ = [
    "RDQuantization",
    "rd_quantize",
    "model_bits",
    "initial_step",
    "lower_envelope",
]

# Index buffers and the file allow far more; 256 codewords (int16 indices) is already
# finer than any step the rate term chooses on the LeNets (a few dozen codewords).
MAX_CODEWORDS = 4096
# Weights per block of the brute-force assignment (per-weight importance): bounds the
# (block, codewords) cost matrix at 16 MB for 256 codewords.
_BLOCK = 8192


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


def lower_envelope(
    codewords: np.ndarray, lengths: np.ndarray, t: float
) -> tuple[np.ndarray, np.ndarray]:
    """Which codewords win somewhere, and where: ``argmin_j (w - c_j)^2 + t * len_j``.

    In ``w`` every cost is ``w^2 - 2 c_j w + (c_j^2 + t len_j)``: up to the common ``w^2``,
    a line of slope ``-2 c_j``. The minimum over ``j`` is the lower envelope of the lines
    (the convex hull trick); a codeword whose line never reaches it is never chosen.

    Args:
        codewords: ``(m,)`` ascending, distinct.
        lengths: ``(m,)`` finite code lengths.
        t: rate weight ``lam / h`` (``>= 0``).

    Returns:
        ``(winners, bounds)``: indices into ``codewords`` of the ``r`` winners, ascending,
        and the ``(r - 1,)`` ascending thresholds between consecutive winners (a ``w``
        exactly on a threshold goes to the lower codeword, as ``argmin`` picks the first).
    """
    intercept = codewords * codewords + t * lengths
    stack: list[int] = []
    starts: list[float] = []  # starts[i]: where stack[i] begins to win

    def meet(a: int, b: int) -> float:  # where line b (larger c) starts to beat line a
        return (intercept[b] - intercept[a]) / (2.0 * (codewords[b] - codewords[a]))

    for j in range(codewords.size):
        x = -math.inf
        while stack:
            x = meet(stack[-1], j)
            if x <= starts[-1]:
                stack.pop()
                starts.pop()
                x = -math.inf
            else:
                break
        stack.append(j)
        starts.append(x)
    return np.asarray(stack, dtype=np.int64), np.asarray(starts[1:], dtype=np.float64)


def _check(lam: float, max_iter: int, max_codewords: int) -> None:
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
            binned into this many log-spaced groups (see :func:`_groups`).

    Returns:
        The :class:`RDQuantization`.

    Raises:
        ConfigError: bad arguments or non-finite weights.
    """
    _check(lam, max_iter, max_codewords)
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
        group, hg = _groups(h_arr, max_groups)
    c, labels, it = _lloyd_sorted(x, group, hg, lam, c, zero_codeword, max_iter)
    return _result(x, h_arr, c, labels, it)


def _result(
    x: np.ndarray, h: np.ndarray, c: np.ndarray, labels: np.ndarray, it: int
) -> RDQuantization:
    """Split codewords (ascending, maybe containing 0) and labels into codebook + mask."""
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
    return RDQuantization(codebook, indices.astype(np.int64), mask, distortion, rate, it)


def _lengths(counts: np.ndarray, n: int) -> np.ndarray:
    return -np.log2(counts / n)


def _groups(h: np.ndarray, max_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Group weights of equal (or, past ``max_groups`` distinct values, similar) importance.

    Returns ``(group (n,) int64, importance of each group (G,))``. Past ``max_groups``
    distinct values the positive importances are binned on a log scale (the bins are
    about ``(max/min)^(1/max_groups)`` wide) and each bin takes its mean importance: the
    importance is a proxy to begin with, and per group the clusters are runs of sorted
    weights, which keeps an iteration O(G m log n) instead of O(n m).
    """
    values, inverse = np.unique(h, return_inverse=True)
    if values.size <= max_groups:
        return inverse.reshape(-1), values
    pos = h > 0
    logs = np.log(h[pos])
    lo, hi = float(logs.min()), float(logs.max())
    bins = max_groups - 1  # one group is kept for zero importance
    b = np.minimum(((logs - lo) / max(hi - lo, 1e-300) * bins).astype(np.int64), bins - 1)
    group = np.zeros(h.size, dtype=np.int64)
    group[pos] = b + 1
    sums = np.bincount(group, weights=h, minlength=bins + 1)
    counts = np.bincount(group, minlength=bins + 1)
    used = counts > 0
    values = sums[used] / counts[used]
    return (np.cumsum(used) - 1)[group], values


def _lloyd_sorted(
    x: np.ndarray,
    group: np.ndarray,
    hg: np.ndarray,
    lam: float,
    c: np.ndarray,
    zero: bool,
    max_iter: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """ECSQ Lloyd where the importance is constant within each group.

    Within a group of importance ``h_g`` the cost is ``h_g (w - c)^2 + lam len(c)``, so its
    clusters are runs of its sorted weights, split at the thresholds of
    :func:`lower_envelope` with ``t = lam / h_g``. Sorting once (by group, then weight)
    makes an iteration O(G m log n): no per-weight work until the final labels.

    Returns ascending codewords (0 among them if still used), labels ``(n,)`` into them,
    and the iterations run.
    """
    n = x.size
    if hg.size == 1:
        # One group: a plain sort (the labels come from the final thresholds, so no
        # permutation is kept: on VGG-16's fc6, 102M weights, that halves the time).
        order = None
        xs = np.sort(x)
        starts = np.array([0, n])
    else:
        order = np.lexsort((x, group))
        xs = x[order]
        starts = np.searchsorted(group[order], np.arange(hg.size + 1), side="left")
    csum = np.concatenate(([0.0], np.cumsum(xs)))
    with np.errstate(divide="ignore"):
        t = np.where(hg > 0, lam / np.where(hg > 0, hg, 1.0), np.inf)

    def envelope(g: int, c: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Winning codewords and thresholds of group ``g``."""
        # Equal code lengths (the first pass): the rate cannot decide, so every group,
        # zero importance included, takes the nearest codeword.
        if c.size == 0 or lengths.max() == lengths.min():
            return lower_envelope(c, lengths, 0.0)
        if math.isinf(t[g]):  # zero importance: only the rate counts
            return np.array([int(np.argmin(lengths))]), np.zeros(0)
        return lower_envelope(c, lengths, float(t[g]))

    def partition(c: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per group, the run ends and codeword ids: ``(G * (m + 1),)`` cuts, ``(G * m,)`` ids.

        Every group lists all ``m`` codewords (non-winners get empty runs), so the arrays
        of two partitions compare directly.
        """
        m = c.size
        cuts = np.empty((hg.size, m + 1), dtype=np.int64)
        for g in range(hg.size):
            a, b = int(starts[g]), int(starts[g + 1])
            win, bounds = envelope(g, c, lengths)
            ends = np.concatenate((a + np.searchsorted(xs[a:b], bounds, "right"), [b]))
            # Codeword j's run ends where the last winner <= j ends; it is empty unless
            # j itself wins.
            full = np.full(m, a, dtype=np.int64)
            full[win] = ends
            cuts[g, 0] = a
            cuts[g, 1:] = np.maximum.accumulate(full)
        return cuts, np.tile(np.arange(m), hg.size)

    c_cur = c
    lengths = np.zeros(c.size)  # first pass: every code equally long, nearest codeword
    cuts, _ = partition(c_cur, lengths)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is read after the loop)
        cnt = np.diff(cuts, axis=1)  # (G, m)
        sums = csum[cuts[:, 1:]] - csum[cuts[:, :-1]]
        counts = cnt.sum(axis=0)
        hsum = (hg[:, None] * cnt).sum(axis=0)
        hx = (hg[:, None] * sums).sum(axis=0)
        fixed = (c_cur == 0.0) if zero else np.zeros(c_cur.size, dtype=bool)
        move = ~fixed & (hsum > 0)
        c_new = np.where(move, hx / np.where(hsum > 0, hsum, 1.0), c_cur)
        used = counts > 0
        c_new, counts = c_new[used], counts[used]
        # Codewords must stay distinct and ascending for the envelope; weighted means of
        # interleaved groups can meet or cross (never with one group): sort and merge.
        c_new, inv = np.unique(c_new, return_inverse=True)
        counts = np.bincount(inv.reshape(-1), weights=counts, minlength=c_new.size)
        lengths = _lengths(counts, n)
        new_cuts, _ = partition(c_new, lengths)
        same = c_new.size == c_cur.size and np.array_equal(new_cuts, cuts)
        c_cur, cuts = c_new, new_cuts
        if same:  # same partition twice: a fixed point
            break
    # The labels are the assignment under the final codewords and code lengths (the
    # partition ``cuts`` was computed from them).
    if order is None:
        win, bounds = envelope(0, c_cur, lengths)
        labels = win[np.searchsorted(bounds, x, side="left")]
    else:
        counts_gm = np.diff(cuts, axis=1).reshape(-1)
        labels = np.empty(n, dtype=np.int64)
        labels[order] = np.repeat(np.tile(np.arange(c_cur.size), hg.size), counts_gm)
    # Drop codewords the final assignment does not use.
    used = np.bincount(labels, minlength=c_cur.size) > 0
    return c_cur[used], (np.cumsum(used) - 1)[labels], it


def _assign_weighted(
    x: np.ndarray, h: np.ndarray, lam: float, c: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """``argmin_j h_i (x_i - c_j)^2 + lam len_j`` for every ``i``, in blocks."""
    labels = np.empty(x.size, dtype=np.int64)
    rate = lam * lengths
    if lengths.size and lengths.max() == lengths.min():
        h = np.ones_like(h)  # equal lengths: nearest codeword for everyone (as the sorted path)
    for s in range(0, x.size, _BLOCK):
        xb, hb = x[s : s + _BLOCK, None], h[s : s + _BLOCK, None]
        labels[s : s + _BLOCK] = np.argmin(hb * (xb - c) ** 2 + rate, axis=1)
    return labels


def _lloyd_weighted(
    x: np.ndarray, h: np.ndarray, lam: float, c: np.ndarray, zero: bool, max_iter: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """ECSQ Lloyd with a per-weight importance (clusters need not be runs: brute force)."""
    n = x.size
    lengths = np.zeros(c.size)
    labels = np.zeros(0, dtype=np.int64)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is read after the loop)
        new = _assign_weighted(x, h, lam, c, lengths)
        counts = np.bincount(new, minlength=c.size)
        used = counts > 0
        new = (np.cumsum(used) - 1)[new]  # renumber to the used codewords, still ascending
        c, counts = c[used], counts[used]
        hw = np.bincount(new, weights=h * x, minlength=c.size)
        hs = np.bincount(new, weights=h, minlength=c.size)
        fixed = (c == 0.0) if zero else np.zeros(c.size, dtype=bool)
        # A cluster of zero-importance weights only has no mean to move to.
        move = ~fixed & (hs > 0)
        c = np.where(move, hw / np.where(hs > 0, hs, 1.0), c)
        lengths = _lengths(counts.astype(np.float64), n)
        if np.array_equal(new, labels):
            break
        labels = new
        if np.unique(c).size != c.size or np.any(np.diff(c) < 0):
            # Weighted means of interleaved clusters can cross or meet: re-sort and merge
            # (the next assignment recomputes the partition anyway).
            c, inv = np.unique(c, return_inverse=True)
            labels = inv[labels]
            counts = np.bincount(labels, minlength=c.size)
            lengths = _lengths(counts.astype(np.float64), n)
            labels = np.zeros(0, dtype=np.int64)  # not a fixed point: iterate again
    if labels.size != n:  # stopped at max_iter right after a merge
        labels = _assign_weighted(x, h, lam, c, lengths)
        used = np.bincount(labels, minlength=c.size) > 0
        labels, c = (np.cumsum(used) - 1)[labels], c[used]
    return c, labels, it


def rd_gptq(
    w: npt.ArrayLike,
    hessian: npt.ArrayLike,
    lam: float,
    *,
    passes: int = 2,
    row_weights: npt.ArrayLike | None = None,
    max_codewords: int = 256,
    damp: float = 0.01,
    act_order: bool = True,
) -> RDQuantization:
    """Rate-distortion assignment with error compensation (GPTQ/OBS) for one layer.

    The distortion is the layer's output error ``sum_o (w_o - q_o)^T H (w_o - q_o)`` for a
    symmetric positive semi-definite ``H`` (e.g. the covariance of the layer's inputs),
    not a sum over weights. As in GPTQ (Frantar et al. 2023, after OBS), the columns are
    quantized one at a time and the error of each is compensated on the columns not yet
    quantized: with ``U`` the upper Cholesky factor of ``H^-1``, quantizing column ``j`` to
    ``q`` adds ``(w - q)^2 / U_jj^2`` to the output error. Here the choice of ``q`` is a
    rate-distortion decision among the codewords (zero included), as in
    :func:`rd_quantize`: ``argmin_c (w - c)^2 / U_jj^2 + lam len(c)``, with the lengths of
    the previous pass. The codewords and the first lengths come from :func:`rd_quantize`
    with the diagonal of ``H`` as importance; the codewords then stay fixed.

    Args:
        w: ``(out, cols)`` weights.
        hessian: ``(cols, cols)`` symmetric PSD ``H``.
        lam: Lagrange multiplier (output-error units per bit).
        row_weights: ``(out,)`` non-negative weights of each row's output error
            (default 1): the distortion becomes ``sum_o r_o (w_o - q_o)^T H (w_o - q_o)``.
        max_codewords: passed to the first :func:`rd_quantize`.
        passes: assignment passes (each re-estimates the code lengths from the last).
        damp: ``H += damp * mean(diag H) * I`` first (GPTQ's dampening; makes a singular
            ``H`` invertible, e.g. inputs that never vary).
        act_order: quantize the columns in order of decreasing ``H_jj`` (GPTQ's
            ``act_order``), so that the most important ones have the most freedom left
            to compensate.

    Returns:
        The :class:`RDQuantization` of the flattened (C order) result; ``distortion`` is
        the output error ``sum_o r_o (w_o - q_o)^T H (w_o - q_o)`` with the undamped ``H``;
        ``iterations`` is the pass it comes from (0: the uncompensated ECSQ was better).
    """
    W0 = np.asarray(w, dtype=np.float64)
    H0 = np.asarray(hessian, dtype=np.float64)
    if W0.ndim != 2 or H0.shape != (W0.shape[1], W0.shape[1]):
        raise ConfigError(f"rd_gptq: weight {W0.shape} and hessian {H0.shape} do not match")
    if not (np.isfinite(W0).all() and np.isfinite(H0).all()):
        raise ConfigError("rd_gptq: weights or hessian contain NaN or infinity")
    _check(lam, 1, max_codewords)
    if lam == 0:
        raise ConfigError("rd_gptq: lam must be > 0")
    out, cols = W0.shape
    r = np.ones(out) if row_weights is None else np.asarray(row_weights, dtype=np.float64)
    if r.shape != (out,) or not np.isfinite(r).all() or (r < 0).any():
        raise ConfigError(f"rd_gptq: row_weights must be ({out},) finite and >= 0")
    order = np.argsort(-np.diag(H0), kind="stable") if act_order else np.arange(cols)
    H = H0[np.ix_(order, order)].copy()
    mean_diag = float(np.mean(np.diag(H))) if cols else 0.0
    H[np.diag_indices(cols)] += damp * mean_diag if mean_diag > 0 else 1.0
    # U: upper Cholesky factor of H^-1 (GPTQ's trick for the sequential OBS updates).
    U = np.linalg.cholesky(np.linalg.inv(H)).T
    Wp = W0[:, order]
    # Codewords and first lengths: ECSQ with the diagonal of H as per-weight importance.
    diag = np.outer(r, np.clip(np.diag(H0)[order], 0, None)).reshape(-1)
    first = rd_quantize(Wp.reshape(-1), lam, importance=diag, max_codewords=max_codewords)
    c = np.union1d(first.codebook, [0.0])
    inv = np.empty(cols, dtype=np.int64)
    inv[order] = np.arange(cols)

    def finish(labels_p: np.ndarray, it: int) -> RDQuantization:
        """The result of ``(out, cols)`` labels into ``c`` (permuted column order)."""
        labels = labels_p[:, inv].reshape(-1)
        used = np.bincount(labels, minlength=c.size) > 0
        res = _result(W0.reshape(-1), np.ones(1), c[used], (np.cumsum(used) - 1)[labels], it)
        diff = W0 - res.values().reshape(out, cols)
        # sum_o r_o diff_o^T H diff_o (a product then a row sum: einsum over three
        # operands would not use BLAS).
        distortion = float(r @ ((diff @ H0) * diff).sum(1))
        return RDQuantization(res.codebook, res.indices, res.mask, distortion, res.rate_bits, it)

    labels = np.searchsorted(c, first.values()).reshape(out, cols)
    # Candidates: the ECSQ result itself, then each compensated pass. Compensation can
    # run away with coarse codebooks (errors pushed onto later columns grow them, fewer
    # zeros, longer zero code, fewer zeros again: measured on LeNet-5's fc1), so the one
    # of least J = D + lam R under the true H is returned: never worse than plain ECSQ.
    best = finish(labels, 0)
    for it in range(1, max(1, passes) + 1):
        counts = np.bincount(labels.reshape(-1), minlength=c.size).astype(np.float64)
        with np.errstate(divide="ignore"):
            lengths = np.where(counts > 0, -np.log2(counts / counts.sum()), np.inf)
        rate = lam * lengths
        Wq = Wp.copy()
        labels = np.zeros((out, cols), dtype=np.int64)
        for j in range(cols):
            col = Wq[:, j]
            cost = r[:, None] * (col[:, None] - c[None, :]) ** 2 / U[j, j] ** 2 + rate[None, :]
            lab = np.argmin(cost, axis=1)
            labels[:, j] = lab
            err = (col - c[lab]) / U[j, j]
            Wq[:, j + 1 :] -= np.outer(err, U[j, j + 1 :])
        cand = finish(labels, it)
        if cand.distortion + lam * cand.rate_bits < best.distortion + lam * best.rate_bits:
            best = cand
    return best
