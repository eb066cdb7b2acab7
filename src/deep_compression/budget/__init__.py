"""Compress to an accuracy budget: the smallest file whose validation error stays within
``max_error_increase`` points of the dense model's, with no recipe to write.

:func:`compress_to_budget` (``deep-compression compress CKPT --max-error-increase P``)
runs the pipeline (:func:`~deep_compression.pipeline.compress`) with a
:class:`BudgetPlanner`, the search that chooses the recipe after the dense phase:

1. the dense checkpoint is measured on the validation split: the images it says it held
   out; for a checkpoint that records none (trained elsewhere, maybe on every training
   image), the dataset's own ``val/`` or one seeded half of the test set, the other half
   kept for the report (see :mod:`deep_compression.data.split`);
2. a sensitivity scan sets each layer's share of the pruning
   (:func:`~.prune_search.layer_exponents`);
3. gradual pruning with retraining goes as far as the budget allows, undoing a round
   that breaks it and retrying with a smaller step (:func:`~.prune_search.search_pruning`);
4. bit widths drop, uniformly and then per layer, while within budget
   (:func:`~.bits_search.search_bits`);
5. the coding is chosen by size (``coder = "best"``, per-layer gap widths ``"auto"``).

Every decision compares the candidate with the dense model on the same images
(:class:`~deep_compression.selection.PairedJudge`): a candidate is kept when its error
increase is within the budget with ``config.confidence`` (90% by default).

The chosen schedule is the run's plan (``recipe.toml``: ``compress --recipe recipe.toml
CKPT`` repeats it bit for bit); the pipeline saves the pruned and quantized models the
search made for it, encodes and reports. Every candidate tried is in ``search.json``.
The test set is measured for the report only.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from deep_compression.budget.bits_search import BitsSearch, search_bits
from deep_compression.budget.config import FINETUNE, RETRAIN, BudgetConfig, Clock, Trial
from deep_compression.budget.prune_search import PruneSearch, layer_exponents, search_pruning
from deep_compression.budget.recipe_file import recipe_header, write_search
from deep_compression.checkpoint import read_meta
from deep_compression.data import DatasetConfig, ValidationConfig
from deep_compression.encode import EncodeConfig
from deep_compression.errors import ConfigError
from deep_compression.phases import Log, PruneOutcome
from deep_compression.pipeline import Given, Plan, Run, compress
from deep_compression.pipeline.plan import load_plan
from deep_compression.progress import log as default_log
from deep_compression.prune import NoPruning, PruneRound, PruneSchedule, sparsity_report
from deep_compression.quantize import QuantizeConfig
from deep_compression.recipe import Recipe
from deep_compression.records import RunReport, SearchSummary
from deep_compression.selection import PairedJudge
from deep_compression.train import TrainConfig, evaluate

__all__ = ["BudgetConfig", "BudgetPlanner", "Trial", "compress_to_budget", "starting_recipe"]

_KEEP_ALL = PruneSchedule(rounds=(PruneRound({"*": NoPruning()}, {"epochs": 0}),))


def starting_recipe(
    checkpoint: str | os.PathLike[str],
    *,
    model: str | None = None,
    model_args: dict[str, Any] | None = None,
    dataset: DatasetConfig | None = None,
    validation: ValidationConfig | None = None,
    seed: int = 0,
    log: Log = default_log,
) -> Recipe:
    """The recipe the search starts from: model, dataset and validation split from the
    checkpoint's metadata (or the arguments, which win), nothing pruned or quantized yet.

    The validation split is the one the checkpoint records it held out when it was
    trained (``train --val-size``); a checkpoint that records none may have been trained
    on those images, which makes its validation error, and so the budget, optimistic:
    said in the log.
    """
    meta = read_meta(checkpoint)
    details = meta.details if meta is not None else {}
    spec = model or (meta.model.name if meta is not None else None)
    if spec is None:
        raise ConfigError(f"{checkpoint} does not say its model: pass --model")
    args = model_args if model_args is not None else dict(meta.model.kwargs) if meta else {}
    if dataset is None:
        source = details.get("dataset_source") or (meta.dataset if meta else None)
        if source is None:
            raise ConfigError(f"{checkpoint} does not say its dataset: pass --dataset")
        dataset = DatasetConfig.from_value(source)
    recorded = details.get("validation")
    if validation is None:
        if recorded:
            validation = ValidationConfig.from_value(recorded)
        else:
            validation = ValidationConfig()
            log(
                f"[budget] {checkpoint} does not record the images it held out, so it may "
                "have seen every training image: decisions go to the dataset's val/ or to "
                "one seeded half of the test set, the report to the other half (--val-from "
                "train if the model never saw some training images)"
            )
    if not validation.enabled:
        raise ConfigError("compressing to a budget needs a validation split (--val-size > 0)")
    return Recipe(
        model=spec,
        model_args=args,
        dataset=dataset,
        validation=validation,
        seed=seed,
        prune=_KEEP_ALL,
        quantize=QuantizeConfig(),
        encode=EncodeConfig(),  # the smallest coding: coder "best", every gap width "auto"
    )


def _plan(config: BudgetConfig, epoch_s: float, n_layers: int) -> BudgetConfig:
    """Fewer epochs per step when the time budget cannot hold the default plan (about ten
    rounds, the polish and a dozen quantization candidates)."""
    if config.max_minutes is None:
        return config
    planned = 10 * config.round_epochs + config.polish_epochs
    planned += (len(config.bits) + n_layers + 2) * config.finetune_epochs
    scale = 0.8 * 60 * config.max_minutes / max(1e-9, planned * epoch_s)
    if scale >= 1:
        return config
    return replace(
        config,
        round_epochs=max(1, round(config.round_epochs * scale)),
        polish_epochs=max(1, round(config.polish_epochs * scale)),
        finetune_epochs=max(1, round(config.finetune_epochs * scale)),
    )


def _settings(
    config: BudgetConfig, run: Run, dense: nn.Module, retrain: TrainConfig, finetune: TrainConfig
) -> tuple[BudgetConfig, TrainConfig, TrainConfig]:
    """The epochs planned for the time budget (one epoch's time estimated from an
    evaluation pass: training costs about three), and the retraining and fine-tuning
    configs with the search's epochs, seed and augmentation."""
    if config.max_minutes is not None:
        t0 = time.perf_counter()
        evaluate(dense, run.ctx.eval)
        epoch_s = 3 * (time.perf_counter() - t0) * len(run.ctx.training) / len(run.ctx.eval)
        config = _plan(config, epoch_s, len(sparsity_report(dense).layers))
    shape = (run.base.preprocessing or {}).get("input_shape", ())
    augment = config.augment
    if augment is None:
        augment = 1 if len(shape) == 3 and min(shape[1:]) >= 8 else 0
    retrain = replace(retrain, epochs=config.round_epochs, seed=config.seed, augment=augment)
    finetune = replace(finetune, epochs=config.finetune_epochs, seed=config.seed)
    return config, retrain, finetune


@dataclass
class BudgetPlanner:
    """The budget search as a planner of :func:`~deep_compression.pipeline.compress`.

    Attributes:
        config: the budget and the search's settings.
        retrain, finetune: the retraining after each pruning round and the centroid
            fine-tuning; their epochs and seeds are the search's (``config``).
    """

    config: BudgetConfig
    retrain: TrainConfig = RETRAIN
    finetune: TrainConfig = FINETUNE
    kind: str = "budget"

    def settings(self) -> Mapping[str, Any]:
        return {
            "config": self.config.to_dict(),
            "retrain": self.retrain.to_dict(),
            "finetune": self.finetune.to_dict(),
        }

    def plan(self, run: Run, dense: nn.Module) -> Plan:
        """Search the pruning schedule and the bit widths on ``run``'s validation split."""
        recipe, ctx = run.recipe, run.ctx
        assert isinstance(recipe, Recipe) and ctx.test is not None, "a validation split"
        clock = Clock(self.config.max_minutes)
        judge = _judge(dense, run, self.config)
        reference = run.dense_reference()["val"]  # as the dense phase measured it
        dense_val = 1.0 - int(np.count_nonzero(~reference)) / max(1, reference.size)
        trials: list[Trial] = []
        config, retrain, finetune = _settings(self.config, run, dense, self.retrain, self.finetune)
        n_layers = len(sparsity_report(dense).layers)
        # The scan takes at most a tenth of a time budget (one evaluation per layer).
        scan_s = 0.1 * 60 * config.max_minutes if config.max_minutes else math.inf
        delta = max(0.01, 0.2 * dense_val)
        exponents = layer_exponents(dense, ctx.eval, delta, trials, clock, max_seconds=scan_s)
        shown = ", ".join(f"{n} {a:.2f}" for n, a in exponents.items())
        ctx.log(f"[budget] pruning exponents {shown}")

        def reserve(epoch: float) -> float:
            quantize = (len(config.bits) + n_layers + 2) * (config.finetune_epochs + 0.5)
            return epoch * (config.polish_epochs + 0.5 + quantize)

        t_prune = clock.elapsed()
        found = search_pruning(
            dense, ctx, judge, exponents, retrain, config, clock, trials, reserve=reserve
        )
        pruned = _outcome(found, clock.elapsed() - t_prune)
        bits = search_bits(found.model, ctx, judge, finetune, config, clock, trials)
        measured = [(v["n"], v["increase"], v["high"]) for t in trials if (v := t.verdict)]
        judge.warn_if_underpowered(measured, ctx.log)
        chosen = replace(recipe, prune=found.schedule, quantize=bits.config)
        numbers = {
            "dense_val_error": dense_val,
            "kept_fraction": pruned.sparsity.kept_fraction,
            "pruned_val_error": found.val_error,
            "quantized_val_error": bits.outcome.test_error,
        }
        limit = dense_val + config.max_error_increase / 100
        write_search(run.run_dir / "search.json", config, limit, numbers, trials, clock.elapsed())
        plan_path = str(run.run_dir / "recipe.toml")
        header = recipe_header(chosen, config, numbers, checkpoint=run.checkpoint, path=plan_path)
        return Plan(
            chosen,
            self._summary(trials, clock.elapsed(), pruned, bits),
            header,
            {"pruned": Given(found.model, pruned), "quantized": Given(bits.model, bits.outcome)},
        )

    def _summary(
        self, trials: list[Trial], seconds: float, pruned: PruneOutcome, bits: BitsSearch
    ) -> SearchSummary:
        widths = sorted(set(bits.config.bits.values()))
        chosen = (
            f"{100 * pruned.sparsity.kept_fraction:.2f}% of the weights kept, "
            f"{'/'.join(map(str, widths))}-bit codebooks"
        )
        decided = sum(1 for t in trials if t.stage in ("prune", "bits"))
        return SearchSummary(
            self.kind,
            self.config.max_error_increase,
            self.config.confidence,
            decided,
            round(seconds, 1),
            chosen,
        )


def compress_to_budget(
    recipe: Recipe,
    checkpoint: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    config: BudgetConfig,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    restart: bool = False,
    allow_code: bool = False,
    progress: bool = False,
    log: Log = default_log,
    retrain: TrainConfig = RETRAIN,
    finetune: TrainConfig = FINETUNE,
) -> tuple[RunReport, Recipe]:
    """Search the schedule, bits and coding for ``checkpoint`` within ``config``'s budget
    and run the recipe chosen into ``run_dir`` (files, ``report.*``, ``recipe.toml``,
    ``search.json``): :func:`~deep_compression.pipeline.compress` with a
    :class:`BudgetPlanner`, so ``run_dir`` resumes, and takes ``force`` and
    ``restart``, as any run does.

    Args:
        recipe: the starting point (:func:`starting_recipe`, or a recipe the user gave).
        checkpoint: the dense model.
        config: the budget and the search's settings.
        retrain, finetune: the retraining after each pruning round and the centroid
            fine-tuning (default :data:`~.config.RETRAIN`, :data:`~.config.FINETUNE`); their
            epochs and seeds are the search's (``config``).

    Returns:
        The report and the recipe chosen (the recipe replays the run exactly).

    Raises:
        ConfigError: ``run_dir`` holds another run and neither ``force`` nor ``restart``
            is given; bad settings.
    """
    if recipe.shrink is not None:  # the search starts from the dense network
        raise ConfigError("the budget search does not run a [shrink] table yet: remove it")
    planner = BudgetPlanner(config, retrain, finetune)
    report = compress(
        recipe,
        run_dir,
        checkpoint=checkpoint,
        planner=planner,
        data_dir=data_dir,
        restart=restart,
        force=force,
        allow_code=allow_code,
        progress=progress,
        log=log,
    )
    chosen = load_plan(Path(run_dir), Recipe)
    assert isinstance(chosen, Recipe)
    return report, chosen


def _judge(dense: nn.Module, run: Run, config: BudgetConfig) -> PairedJudge:
    """The judge of every decision: the dense model's errors on the validation images,
    measured once (by the dense phase of the run)."""
    val = run.ctx.eval
    judge = PairedJudge(
        dense,
        val,
        config.max_error_increase,
        config.confidence,
        seed=run.recipe.validation.seed,
        reference_errors=run.dense_reference()["val"],
    )
    run.ctx.log(
        f"[budget] dense validation error {judge.reference_error:.2f}% on {judge.images:,} "
        f"images: a candidate is kept when its increase, paired image by image, is within "
        f"{config.max_error_increase} points with {100 * config.confidence:g}% confidence"
    )
    return judge


def _outcome(found: PruneSearch, seconds: float) -> PruneOutcome:
    """The pruning phase's outcome, as :func:`~deep_compression.phases.prune_phase` would
    have returned it for the chosen schedule."""
    return PruneOutcome(
        schedule=found.schedule,
        rounds=tuple(r.to_dict() for r in found.results),
        sparsity=sparsity_report(found.model),
        test_error=found.val_error,
        dropout=found.results[-1].dropout if found.results else {},
        seconds=seconds,
    )
