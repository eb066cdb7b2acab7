"""Stage 1: pruning with masks that live on the module.

- :mod:`~deep_compression.prune.mask`: the :class:`PruningMask` parametrization.
- :mod:`~deep_compression.prune.config`: the criteria (``std``, ``fraction``, ``global``,
  ``activation``, ``none``), selectable per layer.
- :mod:`~deep_compression.prune.core`: :func:`prune_`, :func:`strip_pruning`,
  :func:`sparsity_report`.
- :mod:`~deep_compression.prune.schedule`: iterative prune -> retrain schedules (TOML).
- :mod:`~deep_compression.prune.sensitivity`: one-layer-at-a-time sensitivity analysis.
- :mod:`~deep_compression.prune.neuron`: the original project's single-neuron "reduce"
  (smallest subset of inputs that keeps a neuron's output), numpy only.

Attributes are imported lazily, so ``deep_compression.prune.neuron`` and
``deep_compression.prune.config`` can be used without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PRUNABLE_TYPES": "mask",
    "PruningMask": "mask",
    "get_mask": "mask",
    "prunable_layers": "mask",
    "StdThreshold": "config",
    "KeepFraction": "config",
    "GlobalMagnitude": "config",
    "ActivationAware": "config",
    "NoPruning": "config",
    "Criterion": "config",
    "criterion_from_dict": "config",
    "criteria_from_dict": "config",
    "LayerSparsity": "core",
    "SparsityReport": "core",
    "prune_": "core",
    "apply_mask_": "core",
    "strip_pruning": "core",
    "sparsity_report": "core",
    "activation_means": "core",
    "PruneRound": "schedule",
    "PruneSchedule": "schedule",
    "RoundResult": "schedule",
    "load_schedule": "schedule",
    "run_schedule": "schedule",
    "SensitivityPoint": "sensitivity",
    "sensitivity_analysis": "sensitivity",
    "suggest_thresholds": "sensitivity",
    "NeuronReduction": "neuron",
    "reduce_neuron": "neuron",
    "read_neuron_csv": "neuron",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
