"""Where a run starts: its checkpoint (:func:`describe_source`), its data and the
validation split every decision is made on (:func:`split_data`), the metadata every file
starts from (:func:`base_meta`), and the run directory's state (:func:`open_state`)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from deep_compression.checkpoint import read_meta
from deep_compression.data import (
    Data,
    ValidationConfig,
    carve_validation,
    in_memory,
    load_data,
)
from deep_compression.errors import ConfigError
from deep_compression.phases import Log
from deep_compression.pipeline.state import RunState, file_digest
from deep_compression.progress import log as default_log
from deep_compression.recipe import NoRetrainRecipe, Recipe
from deep_compression.records import CheckpointMeta, ModelSpec

__all__ = ["base_meta", "describe_source", "open_state", "split_data"]


def describe_source(
    recipe: Recipe | NoRetrainRecipe, checkpoint: Path | None
) -> tuple[str, CheckpointMeta | None]:
    """A description of the starting point (for the digests) and the checkpoint's
    metadata (None for a plain state dict), after checking that checkpoint and recipe
    agree."""
    if checkpoint is None:
        if isinstance(recipe, NoRetrainRecipe):
            raise ConfigError("compression without retraining starts from a trained CHECKPOINT")
        if recipe.train is None:
            raise ConfigError("no dense checkpoint given and the recipe has no [train] table")
        return "train from scratch", None
    meta = read_meta(checkpoint)  # the header only: the tensors are read once, later
    if meta is not None and meta.model.name != recipe.model:
        raise ConfigError(f"{checkpoint} holds {meta.model.name}, the recipe is for {recipe.model}")
    label = recipe.dataset.label
    if meta is not None and meta.dataset is not None and meta.dataset != label:
        raise ConfigError(f"{checkpoint} was trained on {meta.dataset}, the recipe is for {label}")
    source = f"checkpoint {Path(checkpoint).resolve()} {file_digest(checkpoint)}"
    return source, meta


def split_data(
    recipe: Recipe | NoRetrainRecipe,
    ckpt_meta: CheckpointMeta | None,
    *,
    from_checkpoint: bool,
    data_dir: str | os.PathLike[str] | None = None,
    allow_code: bool = False,
    log: Log = default_log,
) -> tuple[Data, Recipe | NoRetrainRecipe]:
    """The recipe's data with its validation split, and the recipe with that split made
    concrete (``source = "auto"`` resolved, see
    :meth:`~deep_compression.data.ValidationConfig.resolve`): what the run records, so
    that replaying it holds out the same images.

    A model trained here (no checkpoint, or one that records the split it held out) may
    hold out training images; a checkpoint that records none may have seen them all, so
    its decisions go to the dataset's own ``val/`` or to one seeded part of the test set,
    the rest of it kept for the report.
    """
    data = load_data(recipe.dataset, data_dir, allow_code=allow_code)
    held_out = ckpt_meta.details.get("validation") if ckpt_meta is not None else None
    recorded = bool(held_out)
    split = recipe.validation
    if recorded and split.source == "auto":  # the source the checkpoint's run resolved
        split = replace(split, source=ValidationConfig.from_value(held_out).source)
    split = split.resolve(data.val is not None, not from_checkpoint or recorded)
    if from_checkpoint and not recorded and split.source == "train":
        log(
            "[data] warning: the checkpoint does not record the images it held out; "
            "validation from the training images is only honest if the model never saw "
            "them (--val-from test or val otherwise)"
        )
    data = carve_validation(data, split)
    # Measured again and again (every phase, every candidate of a search): decoded once.
    val = in_memory(data.val) if data.val is not None else None
    data = replace(data, test=in_memory(data.test), val=val)
    if data.val is not None:
        log(f"[data] {split.describe(len(data.val), len(data.test))}")
    return data, replace(recipe, validation=split)


def open_state(run_dir: Path, restart: bool, force: bool, run_key: str) -> RunState:
    """The run state in ``run_dir``, checked to be of the run ``run_key`` names (or
    ``force`` given), or a new one with ``restart``."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir}: is a file")
    state = RunState.open(run_dir, restart)
    if state.phases and state.recipe_digest != run_key and not force:
        raise ConfigError(
            f"{run_dir} holds a run of another recipe or checkpoint; pass --force to redo "
            "the phases that changed, --restart to start over, or choose another --out-dir"
        )
    state.recipe_digest = run_key
    return state


def base_meta(
    recipe: Recipe | NoRetrainRecipe,
    ckpt_meta: CheckpointMeta | None,
    preprocessing: dict[str, Any],
) -> CheckpointMeta:
    """The metadata every file of the run starts from."""
    split = {"validation": recipe.validation.to_dict()} if recipe.validation.enabled else {}
    return CheckpointMeta(
        model=ckpt_meta.model if ckpt_meta else ModelSpec(recipe.model, recipe.model_args),
        dataset=recipe.dataset.label,
        preprocessing=preprocessing,
        seed=recipe.seed,
        details={"dataset_source": recipe.dataset.to_dict(), **split},
    )
