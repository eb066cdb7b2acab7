"""Sensitivity analysis: prune one layer at a time, without retraining, and measure.

For each layer and each quality parameter ``s`` the layer alone is pruned with the
paper's rule (``|w| < s * std``, see :class:`~deep_compression.prune.config.StdThreshold`)
on a copy of the model, and the copy is evaluated. The curves (accuracy vs. fraction kept,
one per layer) show which layers tolerate pruning; :func:`suggest_thresholds` picks, per
layer, the largest ``s`` whose accuracy loss stays within a budget. As in the paper, the
layers are measured independently: pruning several at once loses more than the sum
suggests, which is what the retraining rounds of a schedule recover.
"""

from __future__ import annotations

import copy
import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from torch import nn
from torch.utils.data import Dataset

from deep_compression.errors import ConfigError
from deep_compression.progress import progress_bar
from deep_compression.prune.config import NoPruning, StdThreshold
from deep_compression.prune.core import prune_
from deep_compression.prune.mask import prunable_layers
from deep_compression.train import evaluate

__all__ = [
    "SensitivityPoint",
    "SensitivityResult",
    "sensitivity_analysis",
    "suggest_thresholds",
    "write_csv",
]


@dataclass(frozen=True)
class SensitivityPoint:
    """One measurement: ``layer`` pruned alone at ``s`` keeps ``kept`` of ``weights``."""

    layer: str
    s: float
    kept: int
    weights: int
    accuracy: float

    @property
    def kept_fraction(self) -> float:
        return self.kept / self.weights


@dataclass(frozen=True)
class SensitivityResult:
    """All measurements and the unpruned model's accuracy on the same data."""

    baseline: float
    points: tuple[SensitivityPoint, ...]

    def layers(self) -> list[str]:
        return list(dict.fromkeys(p.layer for p in self.points))

    def curve(self, layer: str) -> list[SensitivityPoint]:
        """The points of ``layer`` in order of rising ``s``."""
        return sorted((p for p in self.points if p.layer == layer), key=lambda p: p.s)


def sensitivity_analysis(
    model: nn.Module,
    data: Dataset,
    thresholds: Sequence[float],
    layers: Sequence[str] | None = None,
    *,
    progress: bool = False,
) -> SensitivityResult:
    """Prune each layer alone at each ``s`` in ``thresholds`` and record the accuracy.

    Args:
        model: a trained (possibly already pruned) model; it is not modified.
        data: evaluation split.
        thresholds: values of ``s >= 0``.
        layers: layer names or fnmatch patterns to analyse (default: every prunable layer).
        progress: a progress bar (or log lines) over all evaluations.

    Raises:
        ConfigError: a negative threshold, or a pattern that matches no layer.
    """
    for s in thresholds:
        StdThreshold(s)  # validates
    if not thresholds:
        raise ConfigError("sensitivity analysis needs at least one threshold")
    names = list(prunable_layers(model))
    if layers:
        for pattern in layers:
            if not any(fnmatchcase(n, pattern) for n in names):
                raise ConfigError(
                    f"layer {pattern!r} matches no layer (layers: {', '.join(names)})"
                )
        names = [n for n in names if any(fnmatchcase(n, p) for p in layers)]
    baseline = evaluate(model, data)[1]
    points = []
    trials = [(name, s) for name in names for s in sorted(thresholds)]
    bar = progress_bar(trials, desc="sensitivity", enabled=progress, unit="evaluation")
    for name, s in bar:
        trial = copy.deepcopy(model)
        report = prune_(trial, {"*": NoPruning(), name: StdThreshold(float(s))})
        row = next(r for r in report.layers if r.name == name)
        acc = evaluate(trial, data)[1]
        points.append(SensitivityPoint(name, float(s), row.kept, row.weights, acc))
    bar.close()
    return SensitivityResult(baseline, tuple(points))


def suggest_thresholds(result: SensitivityResult, budget: float) -> list[SensitivityPoint]:
    """Per layer, the point with the largest ``s`` such that it and every smaller ``s``
    lose at most ``budget`` accuracy (a fraction: 0.005 is half a percentage point).

    Stopping at the first violation keeps the suggestion on the flat part of the curve
    even when a noisy larger ``s`` happens to score well again. A layer whose smallest
    ``s`` already breaks the budget gets that smallest point.
    """
    if not budget >= 0:
        raise ConfigError(f"accuracy budget must be >= 0, got {budget!r}")
    chosen = []
    for layer in result.layers():
        curve = result.curve(layer)
        best = curve[0]
        for p in curve:
            if result.baseline - p.accuracy > budget + 1e-12:
                break
            best = p
        chosen.append(best)
    return chosen


def write_csv(result: SensitivityResult, path: str | os.PathLike[str]) -> Path:
    """One row per point: layer, s, kept, weights, kept_fraction, accuracy, accuracy_loss."""
    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", "s", "kept", "weights", "kept_fraction", "accuracy", "accuracy_loss"])
        for p in result.points:
            w.writerow(
                [
                    p.layer,
                    f"{p.s:g}",
                    p.kept,
                    p.weights,
                    f"{p.kept_fraction:.6f}",
                    f"{p.accuracy:.6f}",
                    f"{result.baseline - p.accuracy:.6f}",
                ]
            )
    return path
