"""The search over ``lam`` for the smallest file within an error budget (see
:mod:`.no_retrain`), each candidate sized by its real encoding.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from deep_compression.dcz import CODER_CHOICES, to_bytes
from deep_compression.encode import file_metadata, model_tensors
from deep_compression.errors import ConfigError
from deep_compression.no_retrain.config import (
    SEARCH_START,
    NoRetrainConfig,
    RDReport,
    _int,
    _positive,
    resolve_importance,
)
from deep_compression.no_retrain.quantize import rd_quantize_

__all__ = ["NoRetrainResult", "Trial", "compress_without_retraining", "encoded_size"]


def encoded_size(
    model: nn.Module,
    *,
    coder: str = "best",
    gap_bits: int | str | Mapping[str, int | str] | None = "auto",
    metadata: dict[str, Any] | None = None,
) -> int:
    """Bytes of the ``.dcz`` file ``model`` would be written as (encoded in memory).

    The same records as :func:`deep_compression.encode.encode_model` writes, serialised by
    :func:`deep_compression.dcz.to_bytes`; pass the metadata the real file will hold for
    an exact count (it is part of the zlib-compressed header).
    """
    records = model_tensors(model, gap_bits, coder)
    meta = file_metadata(model, metadata).to_dict()
    return len(to_bytes(records, meta, coder=coder))


@dataclass(frozen=True)
class Trial:
    """One candidate of the search: its ``lam``, file bytes and validation error (%)."""

    lam: float
    file_bytes: int
    val_error: float


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
    refine_steps: int = 6,
    max_trials: int = 40,
) -> NoRetrainResult:
    """The smallest ``.dcz`` whose validation error stays within a budget, no retraining.

    The search over ``lam`` (file size falls as ``lam`` grows): from ``lam_start``,
    multiply by ``grow`` while the candidate stays within budget (divide while it does
    not, if the start is already over), then bisect ``log(lam)`` between the last
    candidate within budget and the first beyond it for ``refine_steps`` steps. Error is
    not exactly monotone in ``lam``, so the answer is the smallest file among *all*
    candidates within budget, and each candidate's size is that of its real encoding.

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
        lam_start, grow, refine_steps, max_trials: the search schedule; ``lam_start``
            defaults to :data:`SEARCH_START` of the importance in use.

    Returns:
        The :class:`NoRetrainResult`; if no candidate meets the budget, the one with the
        lowest validation error is returned (check ``val_error``).

    Raises:
        ConfigError: bad arguments, or ``evaluate_fn`` returns a value outside 0..100.
    """
    t0 = time.perf_counter()
    base = config or NoRetrainConfig()
    budget_points, lam0 = _check_search(
        max_error_increase, base, calibration, lam_start, grow, refine_steps, max_trials, coder
    )
    dense_error = _error_of(evaluate_fn, model)
    search = _Search(
        model,
        evaluate_fn,
        base,
        calibration,
        coder,
        gap_bits,
        metadata,
        dense_error + budget_points,
    )
    good, bad = _bracket(search, lam0, grow, max_trials)
    _refine(search, good, bad, refine_steps, max_trials)
    return _result(search, dense_error, t0)


def _check_search(
    max_error_increase: float,
    base: NoRetrainConfig,
    calibration: torch.Tensor | None,
    lam_start: float | None,
    grow: float,
    refine_steps: int,
    max_trials: int,
    coder: str,
) -> tuple[float, float]:
    """Validate :func:`compress_without_retraining`'s schedule: ``(budget points, lam0)``."""
    budget_points = _positive(max_error_increase, "max_error_increase", allow_zero=True)
    mode = resolve_importance(base.importance, calibration is not None)
    lam0 = _positive(SEARCH_START[mode] if lam_start is None else lam_start, "lam_start")
    if _positive(grow, "grow") <= 1:
        raise ConfigError(f"grow must be > 1, got {grow!r}")
    _int(refine_steps, "refine_steps", 0, 100)
    _int(max_trials, "max_trials", 1, 10_000)
    if coder not in CODER_CHOICES:
        raise ConfigError(f"coder must be one of {', '.join(CODER_CHOICES)}, got {coder!r}")
    return budget_points, lam0


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
    trials: list[Trial] = field(default_factory=list)
    kept: dict[float, tuple[nn.Module, RDReport]] = field(default_factory=dict)

    def run(self, lam: float) -> bool:
        """Make, size and evaluate the candidate of ``lam``; True if within budget."""
        candidate = copy.deepcopy(self.model)
        cfg = self.base.with_lam(lam)
        report = rd_quantize_(candidate, cfg, self.calibration)
        size = encoded_size(
            candidate, coder=self.coder, gap_bits=self.gap_bits, metadata=self.metadata
        )
        err = _error_of(self.evaluate_fn, candidate)
        self.trials.append(Trial(lam, size, err))
        ok = err <= self.limit
        if ok:
            self.kept[lam] = (candidate, report)
            # Only the smallest file within budget is needed; drop the other copies.
            best = min(
                self.kept, key=lambda k: next(t.file_bytes for t in self.trials if t.lam == k)
            )
            for k in list(self.kept):
                if k != best:
                    del self.kept[k]
        return ok


def _bracket(
    search: _Search, lam0: float, grow: float, max_trials: int
) -> tuple[float | None, float | None]:
    """From ``lam0``, grow while within budget, shrink while not: ``(good, bad)``."""
    lam = lam0
    ok = search.run(lam)
    good, bad = (lam, None) if ok else (None, lam)
    while len(search.trials) < max_trials:
        if good is not None and bad is None:
            lam = good * grow
            if search.run(lam):
                good = lam
            else:
                bad = lam
        elif bad is not None and good is None:
            lam = bad / grow
            if lam < 1e-12:
                break
            if search.run(lam):
                good = lam
            else:
                bad = lam
        else:
            break
    return good, bad


def _refine(
    search: _Search, good: float | None, bad: float | None, refine_steps: int, max_trials: int
) -> None:
    """Bisect ``log(lam)`` between the last candidate within budget and the first beyond."""
    steps = 0
    while (
        good is not None
        and bad is not None
        and steps < refine_steps
        and len(search.trials) < max_trials
    ):
        lam = math.sqrt(good * bad)
        if search.run(lam):
            good = lam
        else:
            bad = lam
        steps += 1


def _result(search: _Search, dense_error: float, t0: float) -> NoRetrainResult:
    """The smallest file within budget, else the most accurate candidate (re-made)."""
    if search.kept:
        best_lam = next(iter(search.kept))
        chosen, report = search.kept[best_lam]
    else:  # nothing within budget: the most accurate candidate, re-made
        best_lam = min(search.trials, key=lambda t: (t.val_error, t.file_bytes)).lam
        chosen = copy.deepcopy(search.model)
        report = rd_quantize_(chosen, search.base.with_lam(best_lam), search.calibration)
    trial = next(t for t in search.trials if t.lam == best_lam)
    return NoRetrainResult(
        chosen,
        search.base.with_lam(best_lam),
        trial.file_bytes,
        trial.val_error,
        dense_error,
        tuple(search.trials),
        report,
        time.perf_counter() - t0,
    )
