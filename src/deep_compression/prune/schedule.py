"""Iterative prune -> retrain schedules, as data.

A schedule is the ``[prune]`` table of a TOML recipe, one-to-one with
:class:`PruneSchedule`::

    [prune]
    calibration_size = 1024   # images for the activation-aware criterion (seeded slice)
    calibration_seed = 0
    scale_dropout = true      # D_r = D_o * sqrt(C_r / C_o) after every round

    [prune.retrain]           # train.TrainConfig for every round's retraining; keys not
    epochs = 4                # given take RETRAIN_DEFAULTS (lr 0.005: about 1/10 of the
    lr = 0.005                # dense rate, as the paper retrains its LeNets)

    [[prune.rounds]]          # round 1: prune, then retrain
    criteria = { "*" = { method = "fraction", keep = 0.5 } }

    [[prune.rounds]]          # round 2: prune further, retrain longer
    criteria = { "*" = { method = "fraction", keep = 0.2 }, fc3 = { method = "none" } }
    retrain = { epochs = 8 }  # overrides of [prune.retrain] for this round only

Other tables of the recipe file (``[quantize]``, ``[encode]``...) belong to other stages
and are ignored here; unknown keys inside ``[prune]`` are errors.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from deep_compression.data import Split
from deep_compression.errors import ConfigError
from deep_compression.prune.config import (
    ActivationAware,
    Criterion,
    criteria_from_dict,
    criteria_to_dict,
)
from deep_compression.prune.core import (
    SparsityReport,
    prune_,
)
from deep_compression.prune.dropout import DropoutScaler
from deep_compression.recipe_io import load_config, reject_unknown
from deep_compression.train import TrainConfig, evaluate, fit

__all__ = [
    "RETRAIN_DEFAULTS",
    "PruneRound",
    "PruneSchedule",
    "RoundResult",
    "load_schedule",
    "calibration_batch",
    "run_schedule",
]

# Retraining after pruning: the paper retrains LeNets at about 1/10 of the dense rate.
RETRAIN_DEFAULTS = TrainConfig(epochs=5, lr=0.005, weight_decay=5e-4, schedule="cosine")


@dataclass(frozen=True)
class PruneRound:
    """One round: prune with ``criteria``, then retrain.

    Attributes:
        criteria: per-layer criteria ``{"*": default, "fc1": ...}``.
        retrain: overrides of the schedule's ``retrain`` config for this round only.
    """

    criteria: Mapping[str, Criterion]
    retrain: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"criteria": criteria_to_dict(self.criteria)}
        if self.retrain:
            d["retrain"] = dict(self.retrain)
        return d


@dataclass(frozen=True)
class PruneSchedule:
    """An iterative prune -> retrain schedule (the ``[prune]`` table of a recipe).

    Attributes:
        rounds: at least one round, applied in order.
        retrain: the retraining config of every round (a round may override fields).
        calibration_size: training images whose activations drive the
            activation-aware criterion (a fixed, seeded slice of the training set).
        calibration_seed: seed of that slice.
        scale_dropout: after each round, set each dropout module's rate to
            ``D_o * sqrt(C_r / C_o)`` where ``C`` counts the kept connections of the
            layer(s) it follows, ``_o`` at the start of the schedule.
    """

    rounds: tuple[PruneRound, ...]
    retrain: TrainConfig = RETRAIN_DEFAULTS
    calibration_size: int = 1024
    calibration_seed: int = 0
    scale_dropout: bool = True

    def __post_init__(self) -> None:
        if not self.rounds:
            raise ConfigError("prune.rounds: a schedule needs at least one round")
        if not isinstance(self.retrain, TrainConfig):
            raise ConfigError(f"prune.retrain must be a TrainConfig, got {self.retrain!r}")
        for name in ("calibration_size",):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"prune.{name} must be an integer >= 1, got {value!r}")
        seed = self.calibration_seed
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"prune.calibration_seed must be an integer >= 0, got {seed!r}")
        if not isinstance(self.scale_dropout, bool):
            raise ConfigError(
                f"prune.scale_dropout must be true or false, got {self.scale_dropout!r}"
            )
        for i in range(len(self.rounds)):
            self.retrain_config(i)  # validate every round's merged config now

    def retrain_config(self, index: int) -> TrainConfig:
        """The retraining config of round ``index`` (0-based)."""
        return self.retrain.merged(self.rounds[index].retrain, f"prune.rounds[{index + 1}].retrain")

    @property
    def needs_calibration(self) -> bool:
        return any(isinstance(c, ActivationAware) for r in self.rounds for c in r.criteria.values())

    @property
    def total_epochs(self) -> int:
        return sum(self.retrain_config(i).epochs for i in range(len(self.rounds)))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "prune") -> PruneSchedule:
        """Build from the ``[prune]`` table; unknown keys are a :class:`ConfigError`."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where}: expected a table, got {d!r}")
        reject_unknown(d, {f.name for f in dataclasses.fields(cls)}, where)
        retrain = RETRAIN_DEFAULTS.merged(d.get("retrain", {}), f"{where}.retrain")
        raw_rounds = d.get("rounds")
        if not isinstance(raw_rounds, list) or not raw_rounds:
            raise ConfigError(f"{where}.rounds: give at least one [[{where}.rounds]] table")
        rounds = []
        for i, r in enumerate(raw_rounds, start=1):
            here = f"{where}.rounds[{i}]"
            if not isinstance(r, Mapping):
                raise ConfigError(f"{here}: expected a table, got {r!r}")
            reject_unknown(r, {"criteria", "retrain"}, here)
            if "criteria" not in r:
                raise ConfigError(f"{here}: missing 'criteria'")
            overrides = r.get("retrain", {})
            retrain.merged(overrides, f"{here}.retrain")
            rounds.append(
                PruneRound(criteria_from_dict(r["criteria"], f"{here}.criteria"), dict(overrides))
            )
        rest = {
            k: d[k] for k in ("calibration_size", "calibration_seed", "scale_dropout") if k in d
        }
        return cls(rounds=tuple(rounds), retrain=retrain, **rest)

    def to_dict(self) -> dict[str, Any]:
        """The ``[prune]`` table (inverse of :meth:`from_dict`)."""
        return {
            "calibration_size": self.calibration_size,
            "calibration_seed": self.calibration_seed,
            "scale_dropout": self.scale_dropout,
            "retrain": self.retrain.to_dict(),
            "rounds": [r.to_dict() for r in self.rounds],
        }


def load_schedule(path: str | os.PathLike[str]) -> PruneSchedule:
    """Read the ``[prune]`` table of a TOML recipe file.

    Raises:
        ConfigError: unreadable file, invalid TOML, no ``[prune]`` table, or bad values.
    """
    return load_config(path, PruneSchedule.from_dict, "prune")


def calibration_batch(train: Dataset, size: int, seed: int) -> torch.Tensor:
    """A fixed, seeded random slice of ``size`` training inputs ``(size, ...)``, from a
    :class:`~deep_compression.data.Split` or any map-style dataset of ``(x, y)``."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(train), generator=gen)[: min(size, len(train))]
    if isinstance(train, Split):
        return train.x[idx]
    return torch.stack([torch.as_tensor(train[int(i)][0]) for i in idx])


@dataclass(frozen=True)
class RoundResult:
    """What one round did: sparsity, test accuracy before and after retraining."""

    round: int
    report: SparsityReport
    accuracy_pruned: float
    accuracy_retrained: float
    epochs: int
    seconds: float
    dropout: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "kept_fraction": self.report.kept_fraction,
            "layers": self.report.kept_fractions(),
            "test_error_pruned": 1 - self.accuracy_pruned,
            "test_error_retrained": 1 - self.accuracy_retrained,
            "epochs": self.epochs,
            "seconds": round(self.seconds, 1),
            "dropout": self.dropout,
        }


def run_schedule(
    model: nn.Module,
    schedule: PruneSchedule,
    train: Dataset,
    test: Dataset | None,
    *,
    progress: bool = True,
    on_round: Callable[[RoundResult], None] | None = None,
    start: int = 0,
    reference: nn.Module | None = None,
) -> list[RoundResult]:
    """Apply ``schedule`` to ``model`` in place: each round prunes, then retrains.

    Args:
        model: a trained model (dense or already pruned: masks only ever shrink).
        schedule: the rounds and their retraining configs.
        train: retraining data (and the calibration slice).
        test: evaluated after pruning and after retraining in each round (may be None).
        progress: tqdm bars through every retraining epoch.
        on_round: called with each round's result as soon as it is done.
        start: resume an interrupted run: ``model`` is the state after round ``start``
            (1-based count of finished rounds) and only the later rounds run. Each round
            seeds its own retraining, so the result equals an uninterrupted run's.
        reference: the model as it was before the first round, for the dropout rates
            (``D_o``, ``C_o``) when resuming; default ``model``.

    Returns:
        The results of the rounds run now (``start + 1`` onwards).
    """
    n = len(schedule.rounds)
    if not 0 <= start <= n:
        raise ConfigError(f"start must be in 0..{n} (finished rounds), got {start}")
    # The dropout scaler needs one input; the activation-aware criterion the whole slice.
    size = schedule.calibration_size if schedule.needs_calibration else 1
    calibration = calibration_batch(train, size, schedule.calibration_seed)
    base = reference if reference is not None else model
    scaler = DropoutScaler(base, calibration[:1]) if schedule.scale_dropout else None
    results = []
    for i, rnd in enumerate(schedule.rounds):
        if i < start:
            continue
        t0 = time.perf_counter()
        report = prune_(
            model,
            rnd.criteria,
            calibration=calibration if schedule.needs_calibration else None,
        )
        rates = scaler.update_(model) if scaler is not None else {}
        acc_pruned = evaluate(model, test)[1] if test is not None else math.nan
        config = schedule.retrain_config(i)
        fit(model, train, test, config, progress=progress, desc=f"round {i + 1}/{n} retrain")
        acc = evaluate(model, test)[1] if test is not None else math.nan
        result = RoundResult(
            i + 1, report, acc_pruned, acc, config.epochs, time.perf_counter() - t0, rates
        )
        results.append(result)
        if on_round is not None:
            on_round(result)
    return results
