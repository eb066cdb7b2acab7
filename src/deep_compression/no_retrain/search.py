"""The search over ``lam`` for the smallest file within an error budget (see
:mod:`.no_retrain`), each candidate sized by its real encoding.

The search (file size falls as ``lam`` grows): from a starting ``lam``, multiply by
``grow`` while the candidate is not clearly beyond the budget (divide until one is within
it, if the start is over), then bisect ``log(lam)`` between the last candidate not clearly
beyond and the first clearly beyond, ``refine_steps`` times. "Clearly beyond" means more
than ``tolerance`` points over the limit: a candidate's validation error is a noisy
measurement (on 5,000 images at 1% error its standard error is 0.14 points), not exactly
monotone in ``lam``, and stopping at the first candidate a few images over the limit
leaves smaller files within budget unexplored (measured on LeNet-5: +0.12 points at 93 KB,
+0.06 at 43 KB). Last, ``refine_steps`` more bisections between the largest ``lam``
within the limit and the next one tried above it, where the file shrinks fastest. Only
candidates within the limit itself are ever chosen. ``tolerance = 0`` is a plain
bisection on the first failure.

With a ``judge`` (:class:`~deep_compression.selection.PairedJudge`) the decisions are
paired instead: a candidate is within the budget when its error increase over the dense
model, measured on the same images, is within it with the judge's confidence, and clearly
beyond when it is over it with that confidence; no tolerance is needed.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from deep_compression.errors import ConfigError
from deep_compression.no_retrain.config import (
    SEARCH_START,
    NoRetrainConfig,
    RDReport,
    check_search,
    positive_number,
    search_importances,
)
from deep_compression.no_retrain.quantize import rd_quantize_
from deep_compression.no_retrain.sizing import encoded_size

__all__ = [
    "NoRetrainResult",
    "Trial",
    "compress_without_retraining",
    "encoded_size",
    "validation_noise",
]


def validation_noise(error_pct: float, images: int, sigmas: float = 2.0) -> float:
    """``sigmas`` standard errors, in points, of an error rate of ``error_pct`` percent
    measured on ``images`` images (binomial: ``100 sqrt(p (1 - p) / n)``), at least one
    image's worth: a ``tolerance`` for :func:`compress_without_retraining`."""
    if images <= 0:
        return 0.0
    p = min(max(error_pct / 100.0, 0.0), 1.0)
    return max(sigmas * 100.0 * math.sqrt(p * (1.0 - p) / images), 100.0 / images)


@dataclass(frozen=True)
class Trial:
    """One candidate of the search: its ``lam``, file bytes, validation error (%) and
    the importance it was quantized with."""

    lam: float
    file_bytes: int
    val_error: float
    importance: str = "weights"
    # With a judge: the paired increase over the dense model (points), its one-sided
    # upper bound, the images compared and the decisions (within; clearly beyond).
    increase: float | None = None
    high: float | None = None
    images: int | None = None
    accepted: bool | None = None
    broken: bool | None = None


@dataclass(frozen=True)
class NoRetrainResult:
    """What :func:`compress_without_retraining` found.

    Attributes:
        model: the chosen quantized model (QuantizedWeight parametrizations installed;
            write it with ``encode_model(model, path, EncodeConfig(coder, gap_bits),
            metadata=...)``, the same coder and gap widths, to get ``file_bytes``).
        config: the :class:`NoRetrainConfig` that produced it.
        file_bytes: bytes of its ``.dcz`` (with the metadata given to the search).
        val_error: its validation error (%).
        dense_val_error: the dense model's validation error (%).
        trials: every candidate evaluated, in order.
        report: the chosen model's :class:`RDReport`.
        seconds: wall time of the search.
    """

    model: nn.Module
    config: NoRetrainConfig
    file_bytes: int
    val_error: float
    dense_val_error: float
    trials: tuple[Trial, ...]
    report: RDReport
    seconds: float


def compress_without_retraining(
    model: nn.Module,
    evaluate_fn: Callable[[nn.Module], float],
    max_error_increase: float,
    *,
    config: NoRetrainConfig | None = None,
    calibration: torch.Tensor | None = None,
    coder: str = "best",
    gap_bits: int | str | Mapping[str, int | str] | None = "auto",
    metadata: dict[str, Any] | None = None,
    lam_start: float | None = None,
    grow: float = 4.0,
    refine_steps: int = 5,
    max_trials: int = 40,
    progress: Callable[[Trial], None] | None = None,
    tolerance: float = 0.0,
    dense_error: float | None = None,
    judge: Callable[[nn.Module], Any] | None = None,
    min_gain: float = 0.0,
) -> NoRetrainResult:
    """The smallest ``.dcz`` whose validation error stays within a budget, no retraining.

    The search over ``lam`` is described in the module docstring; the answer is the
    smallest file among *all* candidates within the limit, each sized by its real
    encoding. With calibration inputs and ``importance = "auto"`` it runs once per
    importance of :data:`~.config.AUTO_SEARCH` (calibrated and data-free weighting):
    which one wins depends on the network, and the validation split decides.

    Args:
        model: the trained model; not modified (candidates are quantized copies).
        evaluate_fn: ``model -> validation error in percent`` (0..100). Give it a
            validation split carved from the training data; the test set is for the final
            report only.
        max_error_increase: the budget, in percentage points above the dense model's
            validation error.
        config: settings other than ``lam`` (default :class:`NoRetrainConfig`).
        calibration: optional model inputs for :func:`rd_quantize_`.
        coder, gap_bits, metadata: how candidates are sized (as the final file will be
            written; see :func:`encoded_size`).
        lam_start, grow, refine_steps, max_trials: the search schedule (``max_trials``
            per importance tried); ``lam_start`` defaults to :data:`SEARCH_START` of each
            importance.
        progress: called with each :class:`Trial` as it is measured (a log line).
        tolerance: points over the limit that still count as measurement noise for
            steering the search (never for choosing); see
            :func:`validation_noise` for a value from the split's size.
        dense_error: ``evaluate_fn(model)`` if measured already (not evaluated twice).
        judge: ``model -> Verdict`` (a :class:`~deep_compression.selection.PairedJudge`
            of the same budget) decides instead of ``evaluate_fn`` and ``tolerance``.
        min_gain: a bisection stops once its two ends' files differ by less than this
            fraction (0: after ``refine_steps``).

    Returns:
        The :class:`NoRetrainResult`; if no candidate meets the budget, the one with the
        lowest validation error is returned (check ``val_error``).

    Raises:
        ConfigError: bad arguments, or ``evaluate_fn`` returns a value outside 0..100.
    """
    t0 = time.perf_counter()
    base = config or NoRetrainConfig()
    budget_points = check_search(
        max_error_increase, lam_start, grow, refine_steps, max_trials, coder
    )
    positive_number(tolerance, "tolerance", allow_zero=True)
    modes = search_importances(base.importance, calibration is not None)
    if dense_error is None and hasattr(judge, "reference_error"):
        dense_error = judge.reference_error
    if dense_error is None:
        dense_error = _error_of(evaluate_fn, model)
    limit = dense_error + budget_points
    search = _Search(model, evaluate_fn, base, calibration, coder, gap_bits, metadata, limit)
    search.progress, search.tolerance, search.judge = progress, tolerance, judge
    search.min_gain = min_gain
    for mode in modes:
        search.base = replace(base, importance=mode)
        lam0 = SEARCH_START[mode] if lam_start is None else lam_start
        _search_one(search, lam0, grow, refine_steps, len(search.trials) + max_trials)
    return _result(search, dense_error, t0)


def _search_one(
    search: _Search, lam0: float, grow: float, refine_steps: int, max_trials: int
) -> None:
    """The search with ``search.base``'s importance (its trials are the last ones)."""
    start = len(search.trials)
    lo, hi = _bracket(search, lam0, grow, max_trials)
    _refine(search, lo, hi, refine_steps, max_trials)
    # Then the limit itself: between the largest lam within it and the next one tried
    # above it, where the file shrinks fastest (LeNet-5: 54 KB within, 33 KB not).
    ours = search.trials[start:]  # this importance's trials
    ok = [t.lam for t in ours if search.within(t)]
    if ok:
        above = [t.lam for t in ours if t.lam > max(ok)]
        if above:
            _refine(search, max(ok), min(above), refine_steps, max_trials, near=False)
    # Every candidate so far within the tolerance but over the limit: go lower.
    lam = min(t.lam for t in search.trials[start:])
    while not any(search.within(t) for t in search.trials[start:]):
        lam /= grow
        if lam < 1e-12 or len(search.trials) >= max_trials:
            break
        search.run(lam)


def _error_of(evaluate_fn: Callable[[nn.Module], float], m: nn.Module) -> float:
    """``evaluate_fn(m)``, checked to be an error in percent."""
    e = evaluate_fn(m)
    if not (isinstance(e, int | float) and math.isfinite(e) and 0 <= e <= 100):
        raise ConfigError(f"evaluate_fn must return an error in percent (0..100), got {e!r}")
    return float(e)


@dataclass
class _Search:
    """One search: how candidates are made and sized, every trial in order, and the
    candidates within budget (only the one with the smallest file is kept)."""

    model: nn.Module
    evaluate_fn: Callable[[nn.Module], float]
    base: NoRetrainConfig
    calibration: torch.Tensor | None
    coder: str
    gap_bits: int | str | Mapping[str, int | str] | None
    metadata: dict[str, Any] | None
    limit: float  # the highest validation error within budget (%)
    progress: Callable[[Trial], None] | None = None
    tolerance: float = 0.0  # points over the limit that do not stop the search
    trials: list[Trial] = field(default_factory=list)
    # The smallest file within budget so far: (its trial, model, report).
    best: tuple[Trial, nn.Module, RDReport] | None = None
    # The dense model's calibration statistics, computed once (see rd_quantize_).
    cache: dict[Any, Any] = field(default_factory=dict)
    judge: Callable[[nn.Module], Any] | None = None
    min_gain: float = 0.0  # bisections stop when their ends' files differ by less

    def close(self, lo: float, hi: float) -> bool:
        """Whether the files of ``lo`` and ``hi`` (this importance) differ by less than
        ``min_gain`` of the larger: a finer step in ``lam`` buys less than that."""
        sizes = {t.lam: t.file_bytes for t in self.trials if t.importance == self.base.importance}
        if self.min_gain <= 0 or lo not in sizes or hi not in sizes:
            return False
        return sizes[lo] - sizes[hi] < self.min_gain * sizes[lo]

    def within(self, t: Trial) -> bool:
        """Whether a measured candidate keeps the budget."""
        return bool(t.accepted) if t.accepted is not None else t.val_error <= self.limit

    def _measure(self, lam: float, cfg: NoRetrainConfig, size: int, m: nn.Module) -> Trial:
        if self.judge is None:
            return Trial(lam, size, _error_of(self.evaluate_fn, m), cfg.importance)
        v = self.judge(m)
        est = v.estimate
        return Trial(
            lam,
            size,
            round(est.candidate, 4),
            cfg.importance,
            increase=round(est.increase, 4),
            high=round(est.high, 4),
            images=est.n,
            accepted=v.accepted,
            broken=v.broken,
        )

    def _near(self, t: Trial) -> bool:
        """Not clearly beyond the budget: the search goes on past it."""
        if t.broken is not None:  # judged: clearly beyond when the lower bound is over
            return not t.broken
        return t.val_error <= self.limit + self.tolerance

    def run(self, lam: float) -> tuple[bool, bool]:
        """Make, size and evaluate the candidate of ``lam`` (with the importance of
        ``base``): ``(within the limit, within the limit + tolerance)``."""
        cfg = self.base.with_lam(lam)
        for t in self.trials:  # measured already (a bisection can land on a tried lam)
            if (t.importance, t.lam) == (cfg.importance, lam):
                return self.within(t), self._near(t)
        candidate = copy.deepcopy(self.model)
        report = rd_quantize_(candidate, cfg, self.calibration, cache=self.cache)
        size = encoded_size(
            candidate, coder=self.coder, gap_bits=self.gap_bits, metadata=self.metadata
        )
        trial = self._measure(lam, cfg, size, candidate)
        self.trials.append(trial)
        if self.progress is not None:
            self.progress(trial)
        ok = self.within(trial)
        # Only the smallest file within budget is kept (a copy of the model each).
        if ok and (self.best is None or size < self.best[0].file_bytes):
            self.best = (trial, candidate, report)
        return ok, self._near(trial)


def _bracket(
    search: _Search, lam0: float, grow: float, max_trials: int
) -> tuple[float | None, float | None]:
    """From ``lam0``: grow while not clearly beyond the budget, or shrink until within
    it. Returns ``(lo, hi)``: the largest ``lam`` not clearly beyond and the smallest
    clearly beyond (None if not found)."""
    lam = lam0
    ok, near = search.run(lam)
    if near:  # grow until clearly beyond
        lo, hi = lam, None
        while len(search.trials) < max_trials:
            lam = lo * grow
            ok, near = search.run(lam)
            if not near:
                return lo, lam
            lo = lam
        return lo, hi
    hi, lo = lam, None  # shrink until a candidate is within the limit itself
    while not ok and len(search.trials) < max_trials:
        lam = lam / grow
        if lam < 1e-12:
            break
        ok, near = search.run(lam)
        if not near:
            hi = lam
        elif lo is None:
            lo = lam  # the largest not clearly beyond
    return lo, hi


def _refine(
    search: _Search,
    lo: float | None,
    hi: float | None,
    refine_steps: int,
    max_trials: int,
    *,
    near: bool = True,
) -> None:
    """Bisect ``log(lam)`` between ``lo`` (not clearly beyond the budget; with
    ``near=False``: within the limit) and ``hi`` (clearly beyond; beyond)."""
    steps = 0
    while lo is not None and hi is not None and steps < refine_steps:
        if len(search.trials) >= max_trials or search.close(lo, hi):
            break
        lam = math.sqrt(lo * hi)
        within = search.run(lam)[1 if near else 0]
        if within:
            lo = lam
        else:
            hi = lam
        steps += 1


def _accuracy_first(t: Trial) -> tuple[float, int]:
    """Most accurate first (by the paired upper bound when judged), then smallest."""
    return (t.val_error if t.high is None else t.high, t.file_bytes)


def _result(search: _Search, dense_error: float, t0: float) -> NoRetrainResult:
    """The smallest file within budget, else the most accurate candidate (re-made)."""
    if search.best is not None:
        trial, chosen, report = search.best
    else:  # nothing within budget: the most accurate candidate, re-made
        trial = min(search.trials, key=_accuracy_first)
        chosen = copy.deepcopy(search.model)
        cfg = replace(search.base, importance=trial.importance).with_lam(trial.lam)
        report = rd_quantize_(chosen, cfg, search.calibration, cache=search.cache)
    return NoRetrainResult(
        chosen,
        replace(search.base, importance=trial.importance).with_lam(trial.lam),
        trial.file_bytes,
        trial.val_error,
        dense_error,
        tuple(search.trials),
        report,
        time.perf_counter() - t0,
    )
