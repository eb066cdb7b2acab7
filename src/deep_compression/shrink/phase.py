"""The structured-pruning phase, run by ``deep-compression shrink`` and by the
pipeline's ``shrunk`` step (re-exported by :mod:`deep_compression.phases`).

    train with the group-lasso penalty ([shrink.train], lasso > 0)
    -> choose and remove channels (criterion, keep)
    -> retrain the smaller network ([shrink.retrain])
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from deep_compression.progress import log as default_log
from deep_compression.records import ModelSpec
from deep_compression.shrink.config import ShrinkConfig
from deep_compression.shrink.core import ShrinkReport, check_keep, prunable_groups, shrink_
from deep_compression.shrink.graph import trace_groups
from deep_compression.shrink.lasso import group_lasso
from deep_compression.shrink.surgery import shrunk_spec
from deep_compression.train import evaluate, fit

__all__ = ["ShrinkOutcome", "shrink_phase", "calibration_inputs"]


def calibration_inputs(data: Dataset, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` inputs of ``data`` (at most all of them), drawn with ``seed``: ``(n, ...)``."""
    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(data), generator=gen)[: min(n, len(data))]
    return torch.stack([data[int(i)][0] for i in index])


@dataclass(frozen=True)
class ShrinkOutcome:
    """What :func:`shrink_phase` did."""

    config: ShrinkConfig
    report: ShrinkReport
    test_error_trained: float | None  # after the penalised training (None: none)
    test_error_shrunk: float  # right after removing the channels
    test_error: float  # after retraining
    seconds: float

    def model_spec(self, spec: ModelSpec, model: nn.Module) -> ModelSpec:
        """``spec`` with the shrunk widths (see :func:`~.surgery.shrunk_spec`)."""
        return shrunk_spec(spec, model)

    def details(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            **self.report.to_dict(),
            "test_error_trained": self.test_error_trained,
            "test_error_shrunk": self.test_error_shrunk,
            "test_error": self.test_error,
            "seconds": round(self.seconds, 1),
        }


def shrink_phase(
    model: nn.Module,
    config: ShrinkConfig,
    train: Dataset,
    test: Dataset,
    *,
    progress: bool = True,
    log: Callable[[str], None] = default_log,
    label: str = "test",
) -> ShrinkOutcome:
    """Structured pruning of ``model`` in place, everything ``config`` says.

    ``test`` is the split measured after each step (the validation split when there is
    one: ``label`` names it in the log); the choice of channels uses the training set
    only (its weights, or ``config.calibration`` training images for ``reduce``)."""
    t0 = time.perf_counter()
    example = calibration_inputs(train, 2)
    groups = trace_groups(model, example)
    check_keep(config, groups)  # a typo costs seconds, not a training run
    trained = None
    if config.train is not None and config.train.epochs:
        with group_lasso(model, prunable_groups(groups), config.lasso):
            fit(model, train, test, config.train, progress=progress, desc="shrink train")
        trained = 1.0 - evaluate(model, test)[1]
        log(f"[shrink] trained with group lasso {config.lasso}: {label} error {100 * trained:.2f}%")
    inputs = calibration_inputs(train, config.calibration) if config.criterion == "reduce" else None
    report = shrink_(model, config, example, inputs)
    shrunk = 1.0 - evaluate(model, test)[1]
    widths = ", ".join(f"{k} {a}->{b}" for k, (a, b) in report.widths.items() if a != b)
    log(
        f"[shrink] {config.criterion}: {widths or 'nothing removed'}; parameters "
        f"{report.params[0]:,} -> {report.params[1]:,}, MACs {report.macs[0]:,} -> "
        f"{report.macs[1]:,}; {label} error {100 * shrunk:.2f}%"
    )
    error = shrunk
    if config.retrain is not None and config.retrain.epochs:
        fit(model, train, test, config.retrain, progress=progress, desc="shrink retrain")
        error = 1.0 - evaluate(model, test)[1]
        log(f"[shrink] retrained {config.retrain.epochs} epochs: {label} error {100 * error:.2f}%")
    return ShrinkOutcome(config, report, trained, shrunk, error, time.perf_counter() - t0)
