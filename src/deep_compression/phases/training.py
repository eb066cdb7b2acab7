"""The phases that train: dense training, iterative pruning with retraining, trained
quantization (k-means weight sharing and centroid fine-tuning)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from deep_compression import distributed as dist
from deep_compression.batchnorm import reestimate_batchnorm_
from deep_compression.phases.context import PhaseContext, pct, test_error
from deep_compression.prune import PruneSchedule, RoundResult, SparsityReport, run_schedule
from deep_compression.prune import sparsity_report as measure_sparsity
from deep_compression.quantize import (
    QuantizationReport,
    QuantizeConfig,
    quantization_report,
    quantize_,
    round_float16_,
)
from deep_compression.records import ModelSpec
from deep_compression.train import TrainConfig, TrainResult, fit

__all__ = [
    "TrainOutcome",
    "train_phase",
    "PruneOutcome",
    "prune_phase",
    "QuantizeOutcome",
    "quantize_phase",
]


# --------------------------------------------------------------------------- train


@dataclass(frozen=True)
class TrainOutcome:
    """What :func:`train_phase` did."""

    config: TrainConfig
    result: TrainResult
    seconds: float

    @property
    def test_error(self) -> float:
        return self.result.test_error

    def details(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "test_error": self.test_error,
            "seconds": round(self.seconds, 1),
            "seconds_per_epoch": round(self.result.seconds_per_epoch, 2),
        }


def train_phase(
    model: nn.Module, config: TrainConfig, ctx: PhaseContext, *, desc: str = "train"
) -> TrainOutcome:
    """Train ``model`` in place (dense training from its current weights) on
    ``ctx.train``; ``ctx.eval`` is measured after each epoch."""
    t0 = time.perf_counter()
    result = fit(model, ctx.training, ctx.eval, config, progress=ctx.progress, desc=desc)
    outcome = TrainOutcome(config, result, time.perf_counter() - t0)
    ctx.log(
        f"[{desc}] {ctx.label} error {pct(outcome.test_error)} after {config.epochs} epochs "
        f"({outcome.seconds:.0f} s)"
    )
    return outcome


# --------------------------------------------------------------------------- prune


@dataclass(frozen=True)
class PruneOutcome:
    """What :func:`prune_phase` did: every round (resumed ones included) and the result."""

    schedule: PruneSchedule
    rounds: tuple[Mapping[str, Any], ...]
    sparsity: SparsityReport
    test_error: float
    dropout: Mapping[str, float]
    seconds: float

    def model_spec(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` with the dropout rate the last round left (``D_o * sqrt(C_r / C_o)``).

        A checkpoint rebuilds the model from one model-wide ``dropout`` argument; the
        per-module rates are recorded exactly in :meth:`details`, and the largest is
        kept as the model-wide value (no module is regularised less than its scaled rate).
        """
        if not self.dropout:
            return spec
        return ModelSpec(spec.name, {**spec.kwargs, "dropout": max(self.dropout.values())})

    def details(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule.to_dict(),
            "rounds": [dict(r) for r in self.rounds],
            "kept_fraction": self.sparsity.kept_fraction,
            "layers": self.sparsity.kept_fractions(),
            "dropout": dict(self.dropout),
            "test_error": self.test_error,
            "seconds": round(self.seconds, 1),
        }


def prune_phase(
    model: nn.Module,
    schedule: PruneSchedule,
    ctx: PhaseContext,
    *,
    on_round: Callable[[RoundResult], None] | None = None,
    done_rounds: Sequence[Mapping[str, Any]] = (),
    reference: nn.Module | None = None,
) -> PruneOutcome:
    """Run ``schedule`` on ``model`` in place: each round prunes, then retrains on
    ``ctx.train``, and the error after each round is measured on ``ctx.eval``.

    Args:
        model: a trained model; when resuming, its state after ``len(done_rounds)`` rounds.
        schedule: the rounds.
        ctx: the data, progress and one log line per round.
        on_round: called with each round's result as soon as it is done (to save it).
        done_rounds: the records of rounds finished before an interruption (resume).
        reference: the model before the first round (its dropout rates) when resuming.
    """
    n = len(schedule.rounds)
    rounds = [dict(r) for r in done_rounds]
    log, label, test = ctx.log, ctx.label, ctx.eval
    log(f"[prune] {n} rounds, {schedule.total_epochs} retraining epochs")
    if rounds:
        log(f"[prune] resuming after round {len(rounds)}/{n}")

    def finished(r: RoundResult) -> None:
        rounds.append(r.to_dict())
        if on_round is not None:
            on_round(r)  # saved before it is announced
        log(
            f"[prune] round {r.round}/{n}: kept {pct(r.report.kept_fraction)} "
            f"({', '.join(f'{k} {100 * v:.1f}%' for k, v in r.report.kept_fractions().items())})"
            f"; {label} error {pct(1 - r.accuracy_pruned)} pruned -> "
            f"{pct(1 - r.accuracy_retrained)} retrained ({r.seconds:.0f} s)"
        )

    t0 = time.perf_counter()
    results = run_schedule(
        model,
        schedule,
        ctx.training,
        test,
        progress=ctx.progress,
        on_round=finished,
        start=len(done_rounds),
        reference=reference,
    )
    dist.check_same_across_ranks(model, "after pruning")
    dropout = results[-1].dropout if results else dict(rounds[-1].get("dropout", {}))
    outcome = PruneOutcome(
        schedule=schedule,
        rounds=tuple(rounds),
        sparsity=measure_sparsity(model),
        test_error=test_error(model, test),
        dropout=dropout,
        seconds=time.perf_counter() - t0 + sum(float(r.get("seconds", 0)) for r in done_rounds),
    )
    log(
        f"[prune] kept {pct(outcome.sparsity.kept_fraction)} of the weights; "
        f"{label} error {pct(outcome.test_error)}"
    )
    return outcome


# --------------------------------------------------------------------------- quantize


@dataclass(frozen=True)
class QuantizeOutcome:
    """What :func:`quantize_phase` did."""

    config: QuantizeConfig
    clustered: QuantizationReport
    report: QuantizationReport
    test_error_clustered: float
    test_error: float
    rounded: int
    seconds: float

    def details(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "layers": self.report.to_dict(),
            "test_error_clustered": self.test_error_clustered,
            "test_error": self.test_error,
            "float16_rounded": self.rounded,
            "seconds": round(self.seconds, 1),
        }


def quantize_phase(model: nn.Module, config: QuantizeConfig, ctx: PhaseContext) -> QuantizeOutcome:
    """Trained quantization of ``model`` in place, everything ``config`` says:
    k-means weight sharing (:func:`~deep_compression.quantize.quantize_`), centroid
    fine-tuning (``config.finetune``) and BatchNorm statistics measured again
    (``config.bn_batches``) on ``ctx.train``, then float16 rounding (``config.float16``);
    errors measured on ``ctx.eval``."""
    train, test, progress, log, label = ctx.training, ctx.eval, ctx.progress, ctx.log, ctx.label
    t0 = time.perf_counter()
    clustered_report = quantize_(model, config, progress=progress)
    clustered = test_error(model, test)
    log(f"[quantize] k-means ({config.init}): {label} error {pct(clustered)}")
    if config.finetune.epochs:
        fit(model, train, test, config.finetune, progress=progress, desc="centroid fine-tune")
    reestimated = reestimate_batchnorm_(model, train, config.bn_batches, seed=config.seed)
    if reestimated:
        log(
            f"[quantize] re-estimated {reestimated} BatchNorm layers on {config.bn_batches} batches"
        )
    rounded = round_float16_(model) if config.float16 else 0
    dist.check_same_across_ranks(model, "after quantization")
    if config.float16:
        log(f"[quantize] rounded {rounded} codebook and bias values to float16")
    outcome = QuantizeOutcome(
        config=config,
        clustered=clustered_report,
        # Fine-tuning moved the centroids (never the assignments): measured again.
        report=quantization_report(model),
        test_error_clustered=clustered,
        test_error=test_error(model, test),
        rounded=rounded,
        seconds=time.perf_counter() - t0,
    )
    log(
        f"[quantize] after {config.finetune.epochs} epochs of fine-tuning: "
        f"{label} error {pct(outcome.test_error)}"
    )
    return outcome
