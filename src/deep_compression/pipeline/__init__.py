"""The whole pipeline, driven by one recipe (:mod:`deep_compression.recipe`):
dense -> [shrink] -> prune -> quantize -> encode -> report.

:func:`compress` is a short loop over the phases of :mod:`deep_compression.phases`,
each writing one file into the run directory (``dense.safetensors``,
``shrunk.safetensors`` with a ``[shrink]`` table, ``pruned.safetensors``,
``quantized.safetensors``, ``model.dcz`` with its stage files ``stage-p.dcz`` and
``stage-pq.dcz``) and recording in ``pipeline.json`` a digest of
everything it depends on. Run again on the same directory, finished phases whose digest
still matches are reused (so changing ``[encode]`` re-encodes without re-pruning); the
pruning phase also resumes after its last finished round.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from deep_compression import distributed as dist
from deep_compression.checkpoint import read_meta
from deep_compression.data import (
    Data,
    ValidationConfig,
    carve_validation,
    in_memory,
    load_data,
)
from deep_compression.errors import ConfigError
from deep_compression.fileio import atomic_write, write_json
from deep_compression.models import make_model
from deep_compression.phases import Log
from deep_compression.pipeline.state import (
    PHASES,
    STAGE_FILES,
    RunState,
    file_digest,
    phase_digests,
)
from deep_compression.pipeline.steps import (
    Run,
    dense_step,
    encode_step,
    prune_step,
    quantize_step,
    shrink_step,
)
from deep_compression.progress import log as default_log
from deep_compression.recipe import NoRetrainRecipe, Recipe, digest, load_recipe
from deep_compression.records import CheckpointMeta, ModelSpec, RunReport
from deep_compression.report.markdown import report_markdown
from deep_compression.report.run import build_report

__all__ = [
    "Recipe",
    "load_recipe",
    "compress",
    "copy_final",
    "phase_digests",
    "describe_source",
    "base_meta",
    "split_data",
    "PHASES",
    "STAGE_FILES",
]


def describe_source(
    recipe: Recipe | NoRetrainRecipe, checkpoint: Path | None
) -> tuple[str, CheckpointMeta | None]:
    """A description of the starting point (for the digests) and the checkpoint's
    metadata (None for a plain state dict), after checking that checkpoint and recipe
    agree."""
    if checkpoint is None:
        if getattr(recipe, "train", None) is None:  # a NoRetrainRecipe has no [train]
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
        log("[data] warning: the checkpoint does not record the images it held out; "
            "validation from the training images is only honest if the model never saw "
            "them (--val-from test or val otherwise)")  # fmt: skip
    data = carve_validation(data, split)
    # Measured again and again (every phase, every candidate of a search): decoded once.
    data = replace(data, test=in_memory(data.test),
                   val=in_memory(data.val) if data.val is not None else None)  # fmt: skip
    if data.val is not None:
        log(f"[data] {split.describe(len(data.val), len(data.test))}")
    return data, replace(recipe, validation=split)


def _open_state(run_dir: Path, restart: bool, force: bool, run_key: str) -> RunState:
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


def compress(
    recipe: Recipe,
    run_dir: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    restart: bool = False,
    force: bool = False,
    allow_code: bool = False,
    progress: bool = True,
    log: Log = default_log,
) -> RunReport:
    """Run ``recipe`` from a dense checkpoint (or from scratch) to a ``.dcz`` file.

    Args:
        recipe: the recipe.
        run_dir: directory for every phase's output; resumed if it holds finished phases
            of the same recipe and starting point.
        checkpoint: dense starting checkpoint; ``None`` trains one with ``recipe.train``.
        data_dir: where the dataset is (see :mod:`deep_compression.data`).
        restart: discard the run state in ``run_dir`` and start over.
        force: ``run_dir`` may hold a run of another recipe or checkpoint: reuse the
            phases that still match and redo the rest (replacing their files).
        allow_code: the recipe's model or dataset may be the user's own Python code
            (``net.py:name``), imported and so run.
        progress: progress bars (or log lines) through training phases.
        log: where progress lines go.

    Returns:
        The report (also written as ``report.json`` / ``report.md`` in ``run_dir``).

    Raises:
        ConfigError: checkpoint and recipe disagree, a recipe key matches no layer, or
            ``run_dir`` holds another run and neither ``force`` nor ``restart`` is given;
            all checked before any work.
    """
    run_dir = Path(run_dir)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    source, ckpt_meta = describe_source(recipe, ckpt)
    recipe.check_layers(make_model(recipe.model, recipe.model_args, allow_code=allow_code))
    data, resolved = split_data(recipe, ckpt_meta, from_checkpoint=ckpt is not None,
                                data_dir=data_dir, allow_code=allow_code, log=log)  # fmt: skip
    assert isinstance(resolved, Recipe)
    recipe = resolved
    digests = phase_digests(recipe, source)
    state = _open_state(run_dir, restart, force, digest(source, recipe.digest()))
    base = base_meta(recipe, ckpt_meta, data.info.preprocessing)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "recipe.json", recipe.to_dict())
    run = Run(
        recipe, run_dir, data.train, data.val, data.test, base, digests, progress, log, allow_code
    )
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "dense": lambda: dense_step(run, ckpt),
        **({"shrunk": lambda: shrink_step(run)} if recipe.shrink is not None else {}),
        "pruned": lambda: prune_step(run),
        "quantized": lambda: quantize_step(run),
        "encoded": lambda: encode_step(run),
    }
    done = [p for p in steps if state.done(p, digests[p])]
    dist.check_same_value(json.dumps(done), "resume")  # every rank resumes alike
    for phase, step in steps.items():
        if state.done(phase, digests[phase]):
            log(f"[{phase}] reused from an earlier run in {run_dir}")
            continue
        state.record(phase, digests[phase], step())
    splits = (
        recipe.validation.describe(len(data.val), len(data.test)) if data.val is not None else ""
    )
    report = build_report(run_dir / STAGE_FILES["P+Q+H"], state.phases, recipe, splits)
    write_json(run_dir / "report.json", report.to_dict())
    atomic_write(run_dir / "report.md", report_markdown(report))
    return report


def copy_final(run_dir: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Copy the run's final ``.dcz`` to ``out`` (e.g. ``models/lenet-5.dcz``), with its
    report next to it (``lenet-5.report.json`` and ``lenet-5.report.md``), so a shipped
    file travels with the measurements that describe it. Each copy is atomic."""
    out = Path(out)
    for src, dst in [
        (Path(run_dir) / STAGE_FILES["P+Q+H"], out),
        (Path(run_dir) / "report.json", out.with_name(f"{out.stem}.report.json")),
        (Path(run_dir) / "report.md", out.with_name(f"{out.stem}.report.md")),
    ]:
        if src.is_file():
            atomic_write(dst, src.read_bytes())
    return out
