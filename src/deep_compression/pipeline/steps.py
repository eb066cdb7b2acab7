"""The steps of :func:`~deep_compression.pipeline.compress`: each runs one phase of
:mod:`deep_compression.phases` on what :class:`~.run.Run` shares (or saves the model a
planner already made), writes its file into the run directory and returns what
``pipeline.json`` records of it."""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from torch import nn

from deep_compression.checkpoint import read_meta, save_checkpoint
from deep_compression.dcz.stages import stage_blobs
from deep_compression.fileio import atomic_write
from deep_compression.loading import load_model
from deep_compression.models import make_model
from deep_compression.no_retrain import RDReport, rd_quantize_
from deep_compression.phases import (
    PruneOutcome,
    QuantizeOutcome,
    encode_phase,
    prune_phase,
    quantize_phase,
    shrink_phase,
    train_phase,
    with_stage,
)
from deep_compression.pipeline.run import Run, file_metadata_of
from deep_compression.pipeline.state import STAGE_FILES
from deep_compression.prune import RoundResult
from deep_compression.prune.schedule import calibration_batch
from deep_compression.recipe import NoRetrainRecipe, Recipe
from deep_compression.records import CheckpointMeta
from deep_compression.shrink import SHRUNK_KEY, shrunk_marker
from deep_compression.train import seed_everything

__all__ = [
    "dense_step",
    "shrink_step",
    "prune_step",
    "quantize_step",
    "encode_step",
    "save_pruned",
    "save_quantized",
    "rd_details",
]


def _trained(run: Run) -> Recipe:
    assert isinstance(run.recipe, Recipe), "a phase with training needs a trained recipe"
    return run.recipe


def dense_step(run: Run) -> dict[str, Any]:
    t0 = time.perf_counter()
    if run.checkpoint is not None:
        model, _ = load_model(
            run.checkpoint,
            model=run.base.model.name,
            model_args=run.base.model.kwargs,
            allow_code=run.allow_code,
        )
        how = f"loaded {run.checkpoint}"
        details: dict[str, Any] = {"source": str(run.checkpoint)}
    else:
        recipe = _trained(run)
        assert recipe.train is not None
        seed_everything(recipe.seed)
        model = make_model(recipe.model, recipe.model_args, allow_code=run.allow_code)
        run.ctx.log(f"[dense] training {recipe.model} for {recipe.train.epochs} epochs")
        outcome = train_phase(model, recipe.train, run.ctx, desc="dense")
        how = f"trained {recipe.train.epochs} epochs"
        details = {"train": outcome.details()}
    errors, run.reference = run.measure(model)
    meta = with_stage(run.base, "dense", errors["test_error"], **details)
    save_checkpoint(run.file("dense"), model, meta)
    run.ctx.log(f"[dense] {how}: {_errors_text(errors)}")
    return {
        "files": [run.file("dense").name],
        **errors,
        "how": how,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def shrink_step(run: Run) -> dict[str, Any]:
    model, meta = run.load(run.file("dense"))
    config = _trained(run).shrink
    assert config is not None
    ctx = run.ctx
    outcome = shrink_phase(
        model,
        config,
        ctx.training,
        ctx.eval,
        progress=ctx.progress,
        log=ctx.log,
        label=ctx.label,
    )
    errors = ctx.errors(model, outcome.test_error)
    meta = with_stage(meta, "shrunk", errors["test_error"], shrink=outcome.details())
    meta = replace(meta, model=outcome.model_spec(meta.model, model))
    save_checkpoint(run.file("shrunk"), model, meta.with_details(**{SHRUNK_KEY: True}))
    return {
        "files": [run.file("shrunk").name],
        **errors,
        "params": outcome.report.params[1],
        "dense_bytes": outcome.report.float_bytes[0],
        "seconds": round(outcome.seconds, 1),
    }


def prune_step(run: Run) -> dict[str, Any]:
    recipe = _trained(run)
    if "pruned" in run.given:  # the planner's search made it (its time is the search's)
        t0 = time.perf_counter()
        given = run.given["pruned"]
        record = save_pruned(run, given.model, given.outcome)
        return {**record, "seconds": round(time.perf_counter() - t0, 1)}
    source = "shrunk" if recipe.shrink is not None else "dense"
    model, src = run.load(run.file(source))
    # A shrunk network's spec (its widths), so that every later file rebuilds it.
    base = replace(run.base, model=src.model).with_details(**shrunk_marker(src.details))
    # Every finished round is saved (one file, replaced atomically), so an interrupted
    # run resumes after its last round.
    partial = run.run_dir / "pruned-partial.safetensors"
    done_rounds: list[dict[str, Any]] = []
    reference = None
    if partial.is_file():
        resumed, pm = run.load(partial)
        rounds = pm.details.get("rounds", [])
        if pm.details.get("digest") == run.digests["pruned"] and 0 < len(rounds):
            reference, model, done_rounds = model, resumed, list(rounds)

    finished = list(done_rounds)

    def on_round(r: RoundResult) -> None:
        finished.append(r.to_dict())
        meta = base.with_details(digest=run.digests["pruned"], rounds=finished)
        save_checkpoint(partial, model, meta)

    outcome = prune_phase(
        model,
        recipe.prune,
        run.ctx,
        on_round=on_round,
        done_rounds=done_rounds,
        reference=reference,
    )
    record = save_pruned(run, model, outcome, base)
    partial.unlink(missing_ok=True)
    return record


def save_pruned(
    run: Run, model: nn.Module, outcome: PruneOutcome, base: CheckpointMeta | None = None
) -> dict[str, Any]:
    """Write ``pruned.safetensors`` and return the phase's record. ``base``: the metadata
    to start from (a shrunk network's), default ``run.base``."""
    base = base if base is not None else run.base
    errors = run.ctx.errors(model, outcome.test_error)
    meta = with_stage(base, "pruned", errors["test_error"], prune=outcome.details())
    meta = replace(meta, model=outcome.model_spec(meta.model))
    save_checkpoint(run.file("pruned"), model, meta)
    run.metas["pruned"] = meta
    return {
        "files": [run.file("pruned").name],
        **errors,
        "kept_fraction": outcome.sparsity.kept_fraction,
        "seconds": round(outcome.seconds, 1),
    }


def quantize_step(run: Run) -> dict[str, Any]:
    if isinstance(run.recipe, NoRetrainRecipe):
        return _rd_quantize_step(run, run.recipe)
    if "quantized" in run.given:  # the planner's search made it (its time is the search's)
        t0 = time.perf_counter()
        given = run.given["quantized"]
        meta = run.metas.get("pruned") or read_meta(run.file("pruned"))
        assert meta is not None
        record = save_quantized(run, given.model, meta, given.outcome)
        return {**record, "seconds": round(time.perf_counter() - t0, 1)}
    model, meta = run.load(run.file("pruned"))
    outcome = quantize_phase(model, run.recipe.quantize, run.ctx)
    return save_quantized(run, model, meta, outcome)


def save_quantized(
    run: Run, model: nn.Module, meta: CheckpointMeta, outcome: QuantizeOutcome
) -> dict[str, Any]:
    """Write ``quantized.safetensors`` (``meta``: the pruned model's) and return the
    phase's record."""
    errors = run.ctx.errors(model, outcome.test_error)
    meta = with_stage(meta, "quantized", errors["test_error"], quantize=outcome.details())
    save_checkpoint(run.file("quantized"), model, meta)
    clustered = "val_error_clustered" if run.ctx.test is not None else "test_error_clustered"
    return {
        "files": [run.file("quantized").name],
        **errors,
        clustered: outcome.test_error_clustered,
        "seconds": round(outcome.seconds, 1),
    }


def rd_details(recipe: NoRetrainRecipe, report: RDReport) -> dict[str, Any]:
    """What a no-retrain quantization records: its setting and per-layer results."""
    plan = recipe.no_retrain
    return {
        "config": plan.config.to_dict(),
        "calibration_images": plan.calibration,
        "kept_fraction": report.kept_fraction,
        "layers": [dict(vars(r)) for r in report.layers],
        "seconds": round(report.seconds, 1),
    }


def _rd_quantize_step(run: Run, recipe: NoRetrainRecipe) -> dict[str, Any]:
    """Rate-distortion quantization of the dense model, no training step; not measured
    (the decoded file is, for the report: the same weights, bit for bit)."""
    t0 = time.perf_counter()
    given = run.given.get("quantized")
    if given is not None:  # the planner's search made it
        model, report = given.model, given.outcome
    else:
        model, _ = run.load(run.file("dense"))
        plan = recipe.no_retrain
        calibration = None
        if plan.calibration:
            calibration = calibration_batch(run.ctx.training, plan.calibration, recipe.seed)
        model = copy.deepcopy(model)
        report = rd_quantize_(model, plan.config, calibration)
    details = rd_details(recipe, report)
    meta = with_stage(run.base, "quantized", None, no_retrain=details)
    save_checkpoint(run.file("quantized"), model, meta)
    return {
        "files": [run.file("quantized").name],
        "kept_fraction": report.kept_fraction,
        "how": _rd_text(recipe),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _rd_text(recipe: NoRetrainRecipe) -> str:
    plan = recipe.no_retrain
    return (
        f"no retraining: {plan.config.importance}, lam {plan.config.lam:.4g}, "
        f"{plan.calibration} calibration images"
    )


def encode_step(run: Run, confidence: float = 0.9) -> dict[str, Any]:
    """The final file and its stage files, cut from the bytes written; the model decoded
    from them measured (paired with the dense model image by image in a paired run, at
    ``confidence``)."""
    model, meta = run.load(run.file("quantized"))
    final = run.run_dir / STAGE_FILES["P+Q+H"]
    file_meta = file_metadata_of(run.recipe, meta, run.base)
    increase: dict[str, dict[str, Any]] = {}

    def measure(decoded: nn.Module) -> dict[str, float]:
        errors, vectors = run.measure(decoded)
        if vectors:
            increase.update(run.increase(vectors, confidence))
        return errors

    # The decoded file is measured on the test set (checked equal to the quantized
    # model's test error) and, with a validation split, on that too.
    outcome = encode_phase(
        model, final, run.recipe.encode, file_meta, measure=measure, log=run.ctx.log
    )
    run.final = outcome.file
    blobs = stage_blobs(outcome.file)
    for stage in ("P", "P+Q"):
        path = run.run_dir / STAGE_FILES[stage]
        atomic_write(path, blobs[stage])
        run.ctx.log(f"[encode] {stage}: {path.name} {len(blobs[stage]):,} bytes")
    errors = dict(outcome.errors)
    return {
        "files": list(STAGE_FILES.values()),
        **errors,
        "bytes": {s: len(b) for s, b in blobs.items()},
        "original_bytes": outcome.report.original_bytes,
        "seconds": round(outcome.seconds, 1),
        **({"increase": increase} if increase else {}),
    }


def _errors_text(errors: Mapping[str, float]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {100 * v:.2f}%" for k, v in errors.items())
