"""The Lloyd iterations of entropy-constrained scalar quantization (see :mod:`.rdq`).

:func:`lower_envelope` (which codewords win where), the grouping of per-weight
importances, the sorted-run iteration :func:`rd_quantize` uses, and the brute-force
per-weight iteration kept as its reference. Pure numpy (no torch).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["group_importance", "lloyd_sorted", "lloyd_weighted", "lower_envelope"]

# Weights per block of the brute-force assignment (per-weight importance): bounds the
# (block, codewords) cost matrix at 16 MB for 256 codewords.
_BLOCK = 8192


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
    # Where each line starts to beat the one before it. When these rise strictly, no line
    # is ever popped below: every codeword wins, and the thresholds are these very numbers
    # (the same formula as ``meet``, so the same bits). On ResNet-44's layers that is 78%
    # of the calls; with Python floats below, a call takes 18 us instead of 45.
    x = (intercept[1:] - intercept[:-1]) / (2.0 * (codewords[1:] - codewords[:-1]))
    if not (x.size and (x[0] == -math.inf or bool(np.any(x[1:] <= x[:-1])))):
        return np.arange(codewords.size, dtype=np.int64), x
    # Python floats: the same IEEE double arithmetic as numpy's scalars, several times faster.
    ic, cw = intercept.tolist(), codewords.tolist()
    stack: list[int] = []
    starts: list[float] = []  # starts[i]: where stack[i] begins to win
    for j in range(len(cw)):
        x_j = -math.inf
        while stack:
            a = stack[-1]  # where line j (larger c) starts to beat line a
            x_j = (ic[j] - ic[a]) / (2.0 * (cw[j] - cw[a]))
            if x_j <= starts[-1]:
                stack.pop()
                starts.pop()
                x_j = -math.inf
            else:
                break
        stack.append(j)
        starts.append(x_j)
    return np.asarray(stack, dtype=np.int64), np.asarray(starts[1:], dtype=np.float64)


def _lengths(counts: np.ndarray, n: int) -> np.ndarray:
    return -np.log2(counts / n)


def group_importance(h: np.ndarray, max_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Group weights of equal (or, past ``max_groups`` distinct values, similar) importance.

    ``h`` is the ``(n,)`` non-negative per-weight importance. Returns ``(group (n,) int64,
    importance of each group (G,))``. Past ``max_groups`` distinct values the positive
    importances are binned on a log scale (the bins are about ``(max/min)^(1/max_groups)``
    wide) and each bin takes its mean importance: the importance is a proxy to begin with,
    and per group the clusters are runs of sorted weights, which keeps an iteration
    O(G m log n) instead of O(n m).
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


def _envelope(t_g: float, c: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Winning codewords and thresholds of a group of rate weight ``t_g = lam / h_g``."""
    # Equal code lengths (the first pass): the rate cannot decide, so every group,
    # zero importance included, takes the nearest codeword.
    if c.size == 0 or lengths.max() == lengths.min():
        return lower_envelope(c, lengths, 0.0)
    if math.isinf(t_g):  # zero importance: only the rate counts
        return np.array([int(np.argmin(lengths))]), np.zeros(0)
    return lower_envelope(c, lengths, t_g)


def _partition(
    xs: np.ndarray, starts: np.ndarray, t: np.ndarray, c: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """Per group, the run ends of every codeword: ``(G, m + 1)`` cuts into ``xs``.

    Group ``g`` is ``xs[starts[g]:starts[g + 1]]`` (sorted) with rate weight ``t[g]``.
    Every group lists all ``m`` codewords (non-winners get empty runs), so the cuts of
    two partitions compare directly.
    """
    m = c.size
    cuts = np.empty((t.size, m + 1), dtype=np.int64)
    cuts[:, 0] = starts[:-1]
    if m == 0:
        return cuts
    # Every group's lines at once, as :func:`lower_envelope` computes them for one: the
    # groups where every codeword wins (most of them) then need one searchsorted each.
    equal = lengths.max() == lengths.min()  # see _envelope
    tt = np.zeros(t.size) if equal else np.where(np.isinf(t), 0.0, t)
    intercept = c * c + tt[:, None] * lengths[None, :]  # (G, m)
    meets = (intercept[:, 1:] - intercept[:, :-1]) / (2.0 * (c[1:] - c[:-1]))  # (G, m - 1)
    pops = np.zeros(t.size, dtype=bool)
    if m > 1:
        pops = (meets[:, 0] == -math.inf) | (meets[:, 1:] <= meets[:, :-1]).any(axis=1)
    for g in range(t.size):
        a, b = int(starts[g]), int(starts[g + 1])
        if (equal or not math.isinf(t[g])) and not pops[g]:
            cuts[g, 1:m] = a + np.searchsorted(xs[a:b], meets[g], "right")
            cuts[g, m] = b
            continue
        win, bounds = _envelope(float(t[g]), c, lengths)
        ends = np.concatenate((a + np.searchsorted(xs[a:b], bounds, "right"), [b]))
        # Codeword j's run ends where the last winner <= j ends; it is empty unless
        # j itself wins.
        full = np.full(m, a, dtype=np.int64)
        full[win] = ends
        cuts[g, 1:] = np.maximum.accumulate(full)
    return cuts


def _update(
    cuts: np.ndarray, csum: np.ndarray, hg: np.ndarray, c_cur: np.ndarray, zero: bool, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """One centroid step of :func:`lloyd_sorted`: the new codewords and code lengths.

    ``csum`` is the ``(n + 1,)`` running sum of the sorted weights.
    """
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
    return c_new, _lengths(counts, n)


def lloyd_sorted(
    x: np.ndarray,
    group: np.ndarray,
    hg: np.ndarray,
    lam: float,
    c: np.ndarray,
    zero: bool,
    max_iter: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """ECSQ Lloyd where the importance is constant within each group (what
    :func:`~.rdq_ecsq.rd_quantize` runs).

    Within a group of importance ``h_g`` the cost is ``h_g (w - c)^2 + lam len(c)``, so its
    clusters are runs of its sorted weights, split at the thresholds of
    :func:`lower_envelope` with ``t = lam / h_g``. Sorting once (by group, then weight)
    makes an iteration O(G m log n): no per-weight work until the final labels.

    Args:
        x: ``(n,)`` float64 weights.
        group: ``(n,)`` int64 group of each weight, ``hg``: ``(G,)`` importance of each
            group (:func:`group_importance`).
        lam: Lagrange multiplier (``>= 0``).
        c: ``(m,)`` ascending distinct starting codewords.
        zero: the codeword 0 (if in ``c``) stays fixed at 0.
        max_iter: at most this many iterations (stops at a fixed point).

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

    c_cur = c
    lengths = np.zeros(c.size)  # first pass: every code equally long, nearest codeword
    cuts = _partition(xs, starts, t, c_cur, lengths)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is read after the loop)
        c_new, lengths = _update(cuts, csum, hg, c_cur, zero, n)
        new_cuts = _partition(xs, starts, t, c_new, lengths)
        same = c_new.size == c_cur.size and np.array_equal(new_cuts, cuts)
        c_cur, cuts = c_new, new_cuts
        if same:  # same partition twice: a fixed point
            break
    # The labels are the assignment under the final codewords and code lengths (the
    # partition ``cuts`` was computed from them).
    if order is None:
        win, bounds = _envelope(float(t[0]), c_cur, lengths)
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


def lloyd_weighted(
    x: np.ndarray, h: np.ndarray, lam: float, c: np.ndarray, zero: bool, max_iter: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """ECSQ Lloyd with a per-weight importance (clusters need not be runs: brute force).

    The reference :func:`lloyd_sorted` is checked against: ``x`` and ``h`` are ``(n,)``,
    the other arguments and the result as there (O(n m) per iteration, in blocks).
    """
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
