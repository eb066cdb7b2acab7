"""What ``deep-compression compress`` runs: the recipe (or where a search starts), the
search that chooses one (to an accuracy budget, with or without retraining), and the
run's default name, from the command's options."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from deep_compression.cli._common import validation_of

if TYPE_CHECKING:  # imported when the command runs (the CLI starts without torch)
    from deep_compression.pipeline import Planner
    from deep_compression.recipe import NoRetrainRecipe, Recipe

__all__ = ["what_to_run"]


def what_to_run(
    args: argparse.Namespace, checkpoint: Path | None, recipe: Recipe | NoRetrainRecipe | None
) -> tuple[Recipe | NoRetrainRecipe, Planner | None, str]:
    """The recipe to run (where a search starts), the search if any, and the run's
    default name."""
    from deep_compression.budget import BudgetConfig, BudgetPlanner
    from deep_compression.budget.config import FINETUNE, RETRAIN
    from deep_compression.budget.no_retrain_run import NoRetrainPlanner
    from deep_compression.recipe import NoRetrainRecipe, Recipe

    budget = args.max_error_increase
    if budget is None:  # a recipe as it is (a [no_retrain] one with a budget searches)
        assert recipe is not None
        if isinstance(recipe, NoRetrainRecipe) and args.calibration is not None:
            plan = replace(recipe.no_retrain, calibration=args.calibration)
            recipe = replace(recipe, no_retrain=plan)
        searched = isinstance(recipe, NoRetrainRecipe) and (
            recipe.no_retrain.max_error_increase is not None
        )
        return recipe, NoRetrainPlanner() if searched else None, Path(args.recipe).stem
    assert checkpoint is not None
    start = _starting_recipe(args, checkpoint, recipe)
    stem = Path(checkpoint).stem
    if args.no_retrain:
        given = recipe if isinstance(recipe, NoRetrainRecipe) else None
        return (
            _no_retrain_start(args, start, given),
            NoRetrainPlanner(),
            f"{stem}-no-retrain{budget:g}",
        )
    extra = {"confidence": args.confidence} if args.confidence else {}
    config = BudgetConfig(budget, max_minutes=args.max_minutes, seed=start.seed, **extra)
    trained = recipe if isinstance(recipe, Recipe) else None
    planner = BudgetPlanner(
        config,
        retrain=trained.prune.retrain if trained else RETRAIN,
        finetune=trained.quantize.finetune if trained else FINETUNE,
    )
    return start, planner, f"{stem}-budget{config.max_error_increase:g}"


def _no_retrain_start(
    args: argparse.Namespace, start: Recipe, given: NoRetrainRecipe | None
) -> NoRetrainRecipe:
    """Where ``--no-retrain --max-error-increase P`` starts: the model, dataset, split and
    seed of ``start``; the budget, calibration and confidence of the options, else of the
    ``[no_retrain]`` recipe ``given``, else the defaults."""
    from deep_compression.no_retrain.config import (
        CALIBRATION_IMAGES,
        DEFAULT_CONFIDENCE,
        NoRetrainConfig,
        NoRetrainPlan,
    )
    from deep_compression.recipe import NoRetrainRecipe

    base = given.no_retrain if given else None
    calibration = args.calibration
    if calibration is None:
        calibration = base.calibration if base else CALIBRATION_IMAGES
    confidence = args.confidence or (base.confidence if base else DEFAULT_CONFIDENCE)
    plan = NoRetrainPlan(
        base.config if base else NoRetrainConfig(),
        args.max_error_increase,
        calibration,
        lam_given=bool(base and base.lam_given),
        confidence=confidence,
    )
    return NoRetrainRecipe(
        start.model,
        plan,
        dataset=start.dataset,
        model_args=start.model_args,
        seed=start.seed,
        validation=start.validation,
        **({"encode": given.encode} if given else {}),
    )


def _starting_recipe(
    args: argparse.Namespace, checkpoint: Path, defaults: Recipe | NoRetrainRecipe | None
) -> Recipe:
    """Model, dataset, validation split and seed of a search: the options, else the
    ``--recipe`` (``defaults``), else what the checkpoint says."""
    from deep_compression.budget import starting_recipe
    from deep_compression.data import DatasetConfig
    from deep_compression.models import resolve_spec

    given = args.val_size is not None or args.val_from is not None
    validation = validation_of(args) if given else None
    if validation is None and defaults is not None and defaults.validation.enabled:
        validation = defaults.validation
    model_args = dict(args.model_arg) if args.model_arg else None
    if model_args is None and defaults is not None:
        model_args = dict(defaults.model_args)
    model = resolve_spec(args.model) if args.model is not None else None
    dataset = DatasetConfig.from_value(args.dataset) if args.dataset is not None else None
    return starting_recipe(
        checkpoint,
        model=model or (defaults.model if defaults else None),
        model_args=model_args,
        dataset=dataset or (defaults.dataset if defaults else None),
        validation=validation,
        seed=args.seed if args.seed is not None else defaults.seed if defaults else 0,
    )
