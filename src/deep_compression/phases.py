"""One function per phase of the pipeline, called by the CLI commands and by ``compress``.

Each phase takes a model, its typed config and the data, changes the model in place, and
returns a typed outcome whose ``details()`` go into the checkpoint metadata
(:class:`~deep_compression.records.CheckpointMeta`) under the phase's name. The
``train``, ``prune``, ``quantize`` and ``encode`` commands and
:func:`deep_compression.pipeline.compress` all call these, so a phase behaves and
reports the same whichever way it is run.

    train_phase    (dense) training                          -> TrainOutcome
    shrink_phase   structured pruning (remove whole channels) -> ShrinkOutcome
                   (in deep_compression.shrink.phase, re-exported here)
    prune_phase    iterative prune -> retrain schedule        -> PruneOutcome
    quantize_phase k-means weight sharing, centroid fine-tune -> QuantizeOutcome
    encode_phase   .dcz file, decoded again and checked       -> EncodeOutcome
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from deep_compression import distributed as dist
from deep_compression.batchnorm import reestimate_batchnorm_
from deep_compression.encode import EncodeConfig, EncodeReport, encode_model, read_report
from deep_compression.errors import DeepCompressionError
from deep_compression.loading import load_dcz
from deep_compression.progress import log as default_log
from deep_compression.prune import (
    PruneSchedule,
    RoundResult,
    SparsityReport,
    run_schedule,
    strip_pruning_,
)
from deep_compression.prune import sparsity_report as measure_sparsity
from deep_compression.quantize import (
    QuantizationReport,
    QuantizeConfig,
    quantization_report,
    quantize_,
    round_float16_,
    strip_quantization_,
)
from deep_compression.records import CheckpointMeta, ModelSpec
from deep_compression.shrink.phase import ShrinkOutcome, shrink_phase
from deep_compression.train import TrainConfig, TrainResult, evaluate, fit

__all__ = [
    "Log",
    "test_error",
    "TrainOutcome",
    "train_phase",
    "ShrinkOutcome",
    "shrink_phase",
    "PruneOutcome",
    "prune_phase",
    "QuantizeOutcome",
    "quantize_phase",
    "EncodeOutcome",
    "encode_phase",
    "with_stage",
]

Log = Callable[[str], None]


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def test_error(model: nn.Module, split: Dataset) -> float:
    """Top-1 error of ``model`` on ``split`` (a fraction)."""
    return 1.0 - evaluate(model, split)[1]


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
    model: nn.Module,
    train: Dataset,
    test: Dataset,
    config: TrainConfig,
    *,
    progress: bool = True,
    log: Log = default_log,
    desc: str = "train",
    label: str = "test",
) -> TrainOutcome:
    """Train ``model`` in place (dense training from its current weights); ``test`` is the
    split measured after each epoch, named ``label`` in the log ("validation" or "test")."""
    t0 = time.perf_counter()
    result = fit(model, train, test, config, progress=progress, desc=desc)
    outcome = TrainOutcome(config, result, time.perf_counter() - t0)
    log(
        f"[{desc}] {label} error {_pct(outcome.test_error)} after {config.epochs} epochs "
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
    train: Dataset,
    test: Dataset,
    *,
    progress: bool = True,
    log: Log = default_log,
    on_round: Callable[[RoundResult], None] | None = None,
    done_rounds: Sequence[Mapping[str, Any]] = (),
    reference: nn.Module | None = None,
    label: str = "test",
) -> PruneOutcome:
    """Run ``schedule`` on ``model`` in place: each round prunes, then retrains.

    Args:
        model: a trained model; when resuming, its state after ``len(done_rounds)`` rounds.
        schedule: the rounds.
        train, test: retraining data; the error after each round is measured on ``test``
            (the validation split when there is one: ``label`` names it in the log).
        progress, log: progress bars and one line per round.
        on_round: called with each round's result as soon as it is done (to save it).
        done_rounds: the records of rounds finished before an interruption (resume).
        reference: the model before the first round (its dropout rates) when resuming.
    """
    n = len(schedule.rounds)
    rounds = [dict(r) for r in done_rounds]
    log(f"[prune] {n} rounds, {schedule.total_epochs} retraining epochs")
    if rounds:
        log(f"[prune] resuming after round {len(rounds)}/{n}")

    def finished(r: RoundResult) -> None:
        rounds.append(r.to_dict())
        if on_round is not None:
            on_round(r)  # saved before it is announced
        log(
            f"[prune] round {r.round}/{n}: kept {_pct(r.report.kept_fraction)} "
            f"({', '.join(f'{k} {100 * v:.1f}%' for k, v in r.report.kept_fractions().items())})"
            f"; {label} error {_pct(1 - r.accuracy_pruned)} pruned -> "
            f"{_pct(1 - r.accuracy_retrained)} retrained ({r.seconds:.0f} s)"
        )

    t0 = time.perf_counter()
    results = run_schedule(
        model,
        schedule,
        train,
        test,
        progress=progress,
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
        f"[prune] kept {_pct(outcome.sparsity.kept_fraction)} of the weights; "
        f"{label} error {_pct(outcome.test_error)}"
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


def quantize_phase(
    model: nn.Module,
    config: QuantizeConfig,
    train: Dataset,
    test: Dataset,
    *,
    progress: bool = True,
    log: Log = default_log,
    label: str = "test",
) -> QuantizeOutcome:
    """Trained quantization of ``model`` in place, everything ``config`` says:
    k-means weight sharing (:func:`~deep_compression.quantize.quantize_`), centroid
    fine-tuning (``config.finetune``), BatchNorm statistics measured again
    (``config.bn_batches``), then float16 rounding (``config.float16``)."""
    t0 = time.perf_counter()
    clustered_report = quantize_(model, config, progress=progress)
    clustered = test_error(model, test)
    log(f"[quantize] k-means ({config.init}): {label} error {_pct(clustered)}")
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
        f"{label} error {_pct(outcome.test_error)}"
    )
    return outcome


# --------------------------------------------------------------------------- encode


@dataclass(frozen=True)
class EncodeOutcome:
    """What :func:`encode_phase` wrote, and the error of the model decoded from it."""

    report: EncodeReport
    test_error: float | None
    seconds: float
    val_error: float | None = None


def encode_phase(
    model: nn.Module,
    path: str | os.PathLike[str],
    config: EncodeConfig,
    meta: CheckpointMeta,
    *,
    test: Dataset | None = None,
    val: Dataset | None = None,
    log: Log = default_log,
) -> EncodeOutcome:
    """Write ``model`` to the ``.dcz`` file ``path`` with ``meta``, then decode it again.

    The writer checks every decoded tensor bit for bit against the model. With ``test``,
    the model decoded from the file is evaluated too, and its error must equal
    ``meta.test_error`` when that was measured on the same split; with ``val`` the same
    decoded model is measured on that split too.

    Raises:
        DeepCompressionError: the decoded model's error differs from the model's.
    """
    t0 = time.perf_counter()
    # Rank 0 writes (and verifies) the file; under torchrun the other ranks read it back.
    report = dist.run_on_main(
        lambda: encode_model(model, path, config, metadata=meta), f"writing {path}"
    )
    dist.barrier(f"after writing {path}")
    report = report or read_report(path, config.coder)
    error = val_error = None
    if test is not None or val is not None:
        decoded, _ = load_dcz(path, _plain_copy(model))
        val_error = test_error(decoded, val) if val is not None else None
    if test is not None:
        error = test_error(decoded, test)
        if meta.test_error is not None and error != meta.test_error:
            raise DeepCompressionError(
                f"{path}: the decoded model's test error {_pct(error)} differs from the "
                f"model's {_pct(meta.test_error)}"
            )
    outcome = EncodeOutcome(report, error, time.perf_counter() - t0, val_error)
    log(
        f"[encode] {Path(path).name}: {report.file_bytes:,} bytes, {report.rate:.1f}x "
        f"({config.coder})"
    )
    return outcome


def _plain_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` without parametrizations, to decode a file into: works for any
    architecture, built-in or not, without importing anything the file names."""
    plain = copy.deepcopy(model)
    strip_quantization_(plain)
    strip_pruning_(plain)
    return plain


def with_stage(
    meta: CheckpointMeta, stage: str, error: float | None, **details: Any
) -> CheckpointMeta:
    """``meta`` for the next stage: its name, the error measured now, the phase details."""
    return replace(meta, stage=stage, test_error=error).with_details(**details)
