"""The original project's single-neuron "reduce", done properly (numpy only, no torch).

A neuron with weights ``w`` (n,) sees inputs ``x`` (n,); its pre-activation is
``z = sum_i w_i x_i + b``. Which inputs can be dropped? Find the smallest set of inputs to
*keep* (equivalently the largest set ``R`` to remove) such that the removed contributions
``c_i = w_i x_i`` cancel to within a tolerance::

    maximise |R|  subject to  |sum_{i in R} c_i| <= tolerance

so the reduced pre-activation ``sum_{i not in R} c_i + b`` is within ``tolerance`` of
``z``. (The bias is kept; it only shifts both outputs.) This is a 0/1 knapsack /
subset-sum problem, NP-hard in general, hence two solvers:

``exact`` -- dynamic programming over discretised contributions. Each ``c_i`` is rounded
to an integer multiple ``k_i`` of a quantum ``q``; ``e_i = c_i - q k_i``,
``delta = sum_i |e_i|`` bounds the rounding error of *any* subset. The DP finds, for every
reachable integer sum, the most inputs removable with that sum. Then

- any subset with ``|q K| <= tolerance - delta`` is truly feasible: the best of these is
  returned (a lower bound ``L`` on the optimum, with its subset);
- every truly feasible subset has ``|q K| <= tolerance + delta``: the best of these is an
  upper bound ``U``.

If ``L == U`` the answer is *proved optimal*. Otherwise ``q`` is divided by 4 and the DP
rerun, while the table (``n x`` range of sums) fits a cell budget; if it stops fitting,
the answer is returned with ``proved_optimal=False`` and ``upper_bound=U`` (never silently
presented as optimal). Cost: ``O(n * S)`` time and memory, ``S = sum_i |c_i| / q``.

``greedy`` -- the fallback for large inputs: zero contributions are removed, then the
positive and negative contributions are taken smallest first, always the head that keeps
the running removed sum closest to 0, until neither head fits. ``O(n log n)``; feasible,
with no optimality guarantee (it says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deep_compression.errors import ConfigError
from deep_compression.table import format_table

__all__ = [
    "NeuronReduction",
    "reduce_neuron",
    "solve_exact",
    "solve_greedy",
    "MAX_DP_CELLS",
]

# Cells of the DP table (items x reachable sums) we allow: about 40 MB of working memory.
MAX_DP_CELLS = 20_000_000


@dataclass(frozen=True)
class NeuronReduction:
    """The result of reducing one neuron.

    Attributes:
        weights, inputs: ``(n,)`` as given; ``contributions = weights * inputs``.
        bias: the neuron's bias (kept).
        tolerance: allowed ``|reduced - full|``.
        kept: ``(n,)`` bool, the inputs kept.
        method: ``"exact"`` (dynamic programming) or ``"greedy"``.
        proved_optimal: True only when no smaller kept set exists (exact and ``L == U``).
        upper_bound: the most inputs any feasible removal can have, when known.
        quantum: the DP's discretisation step ``q`` (None for greedy).
    """

    weights: np.ndarray
    inputs: np.ndarray
    bias: float
    tolerance: float
    kept: np.ndarray
    method: str
    proved_optimal: bool
    upper_bound: int | None
    quantum: float | None

    @property
    def contributions(self) -> np.ndarray:
        return self.weights * self.inputs

    @property
    def full(self) -> float:
        """The pre-activation with every input."""
        return float(math.fsum(self.contributions)) + self.bias

    @property
    def reduced(self) -> float:
        """The pre-activation with the kept inputs only."""
        return float(math.fsum(self.contributions[self.kept])) + self.bias

    @property
    def error(self) -> float:
        return abs(self.full - self.reduced)

    @property
    def removed(self) -> int:
        return int((~self.kept).sum())

    def describe(self, limit: int | None = None) -> str:
        """A human-readable report: the inputs with their fate, outputs and the error.

        Args:
            limit: show at most this many inputs, the largest ``|weight * value|`` first
                (0: no table); ``None`` shows every input in order.
        """
        c = self.contributions
        n = len(c)
        order = np.arange(n) if limit is None else np.argsort(-np.abs(c), kind="stable")[:limit]
        rows = [
            [
                i + 1,
                f"{self.weights[i]:.6g}",
                f"{self.inputs[i]:.6g}",
                f"{c[i]:.6g}",
                "kept" if self.kept[i] else "removed",
            ]
            for i in order
        ]
        if self.method == "exact" and self.proved_optimal:
            how = "exact dynamic programming, proved optimal"
        elif self.method == "exact":
            how = (
                f"dynamic programming, NOT proved optimal: at most {self.upper_bound} inputs "
                f"could be removed, {self.removed} were"
            )
        else:
            how = "GREEDY fallback (fast, no optimality guarantee)"
        if self.quantum is not None:
            how += f"; quantum {self.quantum:.3g}"
        lines = []
        if rows:
            lines.append(format_table(["input", "weight", "value", "weight*value", "fate"], rows))
        if len(rows) < n:
            lines.append(f"({n - len(rows)} more inputs not shown; --limit sets how many)")
        lines += [
            f"method: {how}",
            f"kept {n - self.removed} of {n} inputs, removed {self.removed}",
            f"pre-activation: full {self.full:.6g}, reduced {self.reduced:.6g} "
            f"(bias {self.bias:g}); error {self.error:.3g} (tolerance {self.tolerance:.3g})",
        ]
        return "\n".join(lines)


def _check(weights: np.ndarray, inputs: np.ndarray, tolerance: float) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    x = np.asarray(inputs, dtype=np.float64)
    if w.ndim != 1 or w.shape != x.shape:
        raise ConfigError(f"weights {w.shape} and inputs {x.shape} must be equal-length vectors")
    if not (np.isfinite(w).all() and np.isfinite(x).all()):
        raise ConfigError("weights and inputs must be finite numbers")
    if not (isinstance(tolerance, int | float) and 0 <= tolerance < math.inf):
        raise ConfigError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    return w * x


def solve_greedy(contributions: np.ndarray, tolerance: float) -> np.ndarray:
    """Bool ``(n,)`` mask of inputs *removed* by the greedy heuristic (always feasible).

    Orders the inputs by always taking, of the smallest remaining positive and the
    smallest remaining negative contribution, the one that brings the running sum closest
    to 0; removes the longest prefix of that order whose sum is within tolerance (the sum
    may leave the band and come back, so small opposite contributions cancel), then adds
    any other input, smallest first, that still fits.
    """
    c = np.asarray(contributions, dtype=np.float64)
    pos = [int(i) for i in np.argsort(c, kind="stable") if c[i] > 0]  # smallest first
    neg = [int(i) for i in np.argsort(-c, kind="stable") if c[i] < 0]  # closest to 0 first
    order = [int(i) for i in np.flatnonzero(c == 0.0)]
    total, best_len, best_total = 0.0, len(order), 0.0
    ip = ineg = 0
    while ip < len(pos) or ineg < len(neg):
        take_pos = ineg >= len(neg) or (
            ip < len(pos) and abs(total + c[pos[ip]]) <= abs(total + c[neg[ineg]])
        )
        i = pos[ip] if take_pos else neg[ineg]
        ip, ineg = (ip + 1, ineg) if take_pos else (ip, ineg + 1)
        order.append(i)
        total += c[i]
        if abs(total) <= tolerance:
            best_len, best_total = len(order), total
    removed = np.zeros(len(c), dtype=bool)
    removed[order[:best_len]] = True
    for i in np.argsort(np.abs(c), kind="stable"):
        if not removed[i] and abs(best_total + c[i]) <= tolerance:
            removed[i] = True
            best_total += c[i]
    return removed


def _dp(k: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """0/1 knapsack over integer sums: most items per reachable sum, with a trace.

    Returns ``(best, taken, offset)``: ``best[s + offset]`` is the most items whose ``k``
    sum to ``s`` (-1 if unreachable); ``taken[i, j]`` tells whether item ``i`` is in that
    best set for the prefix ``0..i`` (for backtracking).
    """
    lo, hi = int(k[k < 0].sum()), int(k[k > 0].sum())
    size = hi - lo + 1
    best = np.full(size, -1, dtype=np.int32)
    best[-lo] = 0
    taken = np.zeros((len(k), size), dtype=bool)
    for i, ki in enumerate(k.tolist()):
        shifted = np.full(size, -1, dtype=np.int32)
        if ki >= 0:
            shifted[ki:] = best[: size - ki]
        else:
            shifted[:ki] = best[-ki:]
        cand = np.where(shifted >= 0, shifted + 1, -1)
        taken[i] = cand > best
        np.maximum(best, cand, out=best)
    return best, taken, -lo


def _backtrack(taken: np.ndarray, k: np.ndarray, index: int, offset: int) -> np.ndarray:
    removed = np.zeros(len(k), dtype=bool)
    j = index
    for i in range(len(k) - 1, -1, -1):
        if taken[i, j]:
            removed[i] = True
            j -= int(k[i])
    assert j == offset  # back at sum 0
    return removed


def _cells(c: np.ndarray, q: float) -> int:
    return len(c) * (int(np.abs(np.rint(c / q)).sum()) + 1)


def _initial_quantum(c: np.ndarray, tolerance: float) -> float | None:
    nonzero = np.abs(c[c != 0])
    if nonzero.size == 0:
        return None
    # Rounding error of a subset is at most n*q/2; q = tol/(2n) keeps it below tol/4.
    scale = tolerance if tolerance > 0 else float(nonzero.min())
    return scale / (2 * len(c))


def solve_exact(
    contributions: np.ndarray, tolerance: float, max_cells: int = MAX_DP_CELLS
) -> tuple[np.ndarray, bool, int, float | None]:
    """Dynamic programming over discretised contributions (see the module docs).

    Returns:
        ``(removed, proved_optimal, upper_bound, quantum)``: ``removed`` is a feasible
        bool ``(n,)`` mask, ``upper_bound`` the most inputs any feasible removal has,
        ``quantum`` the step ``q`` of the last DP run.

    Raises:
        ConfigError: even the first discretisation needs more than ``max_cells``.
    """
    c = np.asarray(contributions, dtype=np.float64)
    # Zero contributions never change a sum: remove them all, solve for the rest.
    removed = c == 0.0
    rest = np.flatnonzero(~removed)
    cr = c[rest]
    q = _initial_quantum(cr, tolerance)
    if q is None:
        return removed, True, len(c), None
    if _cells(cr, q) > max_cells:
        raise ConfigError(
            f"{len(c)} inputs need a DP table of {_cells(cr, q):,} cells (limit "
            f"{max_cells:,}); use the greedy method"
        )
    best_sub = np.zeros(len(cr), dtype=bool)  # removing nothing is always feasible
    upper = len(cr)
    while True:
        k = np.rint(cr / q).astype(np.int64)
        delta = float(np.abs(cr - q * k).sum())  # bounds the rounding error of any subset
        best, taken, offset = _dp(k)
        sums = (np.arange(len(best)) - offset) * q
        reachable = best >= 0
        loose = reachable & (np.abs(sums) <= tolerance + delta)
        upper = min(upper, int(best[loose].max()))
        # Candidates: the tight band (feasible for certain), then sums in the loose band
        # reaching the upper bound, each checked in real arithmetic.
        tight = reachable & (np.abs(sums) <= tolerance - delta)
        candidates = []
        if tight.any():
            candidates.append(int(np.flatnonzero(tight)[np.argmax(best[tight])]))
        candidates += [int(j) for j in np.flatnonzero(loose & (best == upper))]
        for j in candidates:
            if best[j] <= best_sub.sum():
                continue
            sub = _backtrack(taken, k, j, offset)
            if abs(math.fsum(cr[sub])) <= tolerance:
                best_sub = sub
        if int(best_sub.sum()) == upper or _cells(cr, q / 4) > max_cells:
            break
        q /= 4
    removed[rest[best_sub]] = True
    zeros = len(c) - len(cr)
    return removed, int(best_sub.sum()) == upper, upper + zeros, q


def reduce_neuron(
    weights: np.ndarray,
    inputs: np.ndarray,
    tolerance: float,
    *,
    bias: float = 0.0,
    method: str = "auto",
    max_cells: int = MAX_DP_CELLS,
) -> NeuronReduction:
    """Smallest set of inputs that keeps the neuron's pre-activation within ``tolerance``.

    Args:
        weights, inputs: ``(n,)`` finite numbers.
        tolerance: allowed absolute change of the pre-activation, ``>= 0``.
        bias: the neuron's bias (always kept).
        method: ``"exact"``, ``"greedy"``, or ``"auto"`` (exact when its first DP table
            fits ``max_cells``, else greedy).

    Raises:
        ConfigError: bad values, unknown method, or ``exact`` on a problem too large.
    """
    c = _check(weights, inputs, tolerance)
    if method not in ("auto", "exact", "greedy"):
        raise ConfigError(f"method must be 'auto', 'exact' or 'greedy', got {method!r}")
    if len(c) == 0:
        raise ConfigError("a neuron needs at least one input")
    if method == "auto":
        q = _initial_quantum(c, tolerance)
        method = "exact" if q is None or _cells(c, q) <= max_cells else "greedy"
    if method == "exact":
        removed, proved, upper, q = solve_exact(c, tolerance, max_cells)
        return NeuronReduction(
            np.asarray(weights, np.float64),
            np.asarray(inputs, np.float64),
            float(bias),
            float(tolerance),
            ~removed,
            "exact",
            proved,
            upper,
            q,
        )
    removed = solve_greedy(c, tolerance)
    return NeuronReduction(
        np.asarray(weights, np.float64),
        np.asarray(inputs, np.float64),
        float(bias),
        float(tolerance),
        ~removed,
        "greedy",
        False,
        None,
        None,
    )
