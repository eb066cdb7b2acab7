"""Stage 1: pruning with masks that live on the module.

- :mod:`~deep_compression.prune.mask`: the :class:`PruningMask` parametrization.
- :mod:`~deep_compression.prune.config`: the criteria (``std``, ``fraction``, ``global``,
  ``activation``, ``none``), selectable per layer.
- :mod:`~deep_compression.prune.core`: :func:`prune_`, :func:`strip_pruning_`,
  :func:`sparsity_report`.
- :mod:`~deep_compression.prune.schedule`: iterative prune -> retrain schedules (TOML).
- :mod:`~deep_compression.prune.sensitivity`: one-layer-at-a-time sensitivity analysis.

The original project's single-neuron "reduce" is not a pruning stage of a network; it
lives in :mod:`deep_compression.neuron` (numpy only).
"""

from __future__ import annotations

from deep_compression.prune.config import (
    ActivationAware,
    Criterion,
    GlobalMagnitude,
    KeepFraction,
    NoPruning,
    StdThreshold,
    criteria_from_dict,
    criterion_from_dict,
)
from deep_compression.prune.core import (
    LayerSparsity,
    SparsityReport,
    activation_means,
    apply_mask_,
    prune_,
    sparsity_report,
    strip_pruning_,
)
from deep_compression.prune.mask import PRUNABLE_TYPES, PruningMask, get_mask, prunable_layers
from deep_compression.prune.schedule import (
    PruneRound,
    PruneSchedule,
    RoundResult,
    load_schedule,
    run_schedule,
)
from deep_compression.prune.sensitivity import (
    SensitivityPoint,
    sensitivity_analysis,
    suggest_thresholds,
)

__all__ = [
    "PRUNABLE_TYPES",
    "ActivationAware",
    "Criterion",
    "GlobalMagnitude",
    "KeepFraction",
    "LayerSparsity",
    "NoPruning",
    "PruneRound",
    "PruneSchedule",
    "PruningMask",
    "RoundResult",
    "SensitivityPoint",
    "SparsityReport",
    "StdThreshold",
    "activation_means",
    "apply_mask_",
    "criteria_from_dict",
    "criterion_from_dict",
    "get_mask",
    "load_schedule",
    "prunable_layers",
    "prune_",
    "run_schedule",
    "sensitivity_analysis",
    "sparsity_report",
    "strip_pruning_",
    "suggest_thresholds",
]
