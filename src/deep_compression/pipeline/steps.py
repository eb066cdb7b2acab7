"""The steps of :func:`~deep_compression.pipeline.compress`: each runs one phase of
:mod:`deep_compression.phases` on what :class:`Run` shares, writes its file into the run
directory and returns what ``pipeline.json`` records of it."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from deep_compression import __version__
from deep_compression import distributed as dist
from deep_compression.checkpoint import save_checkpoint
from deep_compression.dcz import open_dcz
from deep_compression.dcz.stages import stage_blobs
from deep_compression.fileio import atomic_write
from deep_compression.loading import load_model
from deep_compression.models import make_model
from deep_compression.phases import (
    Log,
    PruneOutcome,
    QuantizeOutcome,
    encode_phase,
    prune_phase,
    quantize_phase,
    shrink_phase,
    test_error,
    train_phase,
    with_stage,
)
from deep_compression.pipeline.state import STAGE_FILES
from deep_compression.prune import RoundResult
from deep_compression.recipe import Recipe
from deep_compression.records import CheckpointMeta
from deep_compression.shrink import SHRUNK_KEY, shrunk_marker
from deep_compression.train import seed_everything

__all__ = [
    "Run",
    "dense_step",
    "shrink_step",
    "prune_step",
    "quantize_step",
    "encode_step",
    "save_pruned",
    "save_quantized",
]


@dataclass
class Run:
    """What every phase step of :func:`compress` shares."""

    recipe: Recipe
    run_dir: Path
    train: Dataset
    val: Dataset | None
    test: Dataset
    base: CheckpointMeta
    digests: dict[str, str]
    progress: bool
    log: Log
    allow_code: bool

    @property
    def eval(self) -> Dataset:
        """The split the phases measure (and would decide) on: validation, else test."""
        return self.val if self.val is not None else self.test

    @property
    def label(self) -> str:
        return "validation" if self.val is not None else "test"

    def errors(self, model: nn.Module, eval_error: float) -> dict[str, float]:
        """The errors a phase records: ``eval_error`` measured on :attr:`eval`, and with
        a validation split the test error too, measured for the report only."""
        if self.val is None:
            return {"test_error": eval_error}
        return {"val_error": eval_error, "test_error": test_error(model, self.test)}

    def file(self, phase: str) -> Path:
        return self.run_dir / f"{phase}.safetensors"

    def load(self, path: Path) -> tuple[nn.Module, CheckpointMeta]:
        # Under torchrun rank 0 wrote the file: every rank waits for it first.
        dist.barrier(f"before reading {path.name}")
        return load_model(path, allow_code=self.allow_code)


def dense_step(run: Run, checkpoint: Path | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    if checkpoint is not None:
        model, _ = load_model(
            checkpoint,
            model=run.base.model.name,
            model_args=run.base.model.kwargs,
            allow_code=run.allow_code,
        )
        how = f"loaded {checkpoint}"
        details: dict[str, Any] = {"source": str(checkpoint)}
    else:
        assert run.recipe.train is not None
        seed_everything(run.recipe.seed)
        model = make_model(run.recipe.model, run.recipe.model_args, allow_code=run.allow_code)
        run.log(f"[dense] training {run.recipe.model} for {run.recipe.train.epochs} epochs")
        outcome = train_phase(
            model,
            run.train,
            run.eval,
            run.recipe.train,
            progress=run.progress,
            log=run.log,
            desc="dense",
            label=run.label,
        )
        how = f"trained {run.recipe.train.epochs} epochs"
        details = {"train": outcome.details()}
    errors = run.errors(model, test_error(model, run.eval))
    meta = with_stage(run.base, "dense", errors["test_error"], **details)
    save_checkpoint(run.file("dense"), model, meta)
    run.log(f"[dense] {how}: {_errors_text(errors)}")
    return {
        "files": [run.file("dense").name],
        **errors,
        "how": how,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def shrink_step(run: Run) -> dict[str, Any]:
    model, meta = run.load(run.file("dense"))
    config = run.recipe.shrink
    assert config is not None
    outcome = shrink_phase(
        model, config, run.train, run.eval, progress=run.progress, log=run.log, label=run.label
    )
    errors = run.errors(model, outcome.test_error)
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
    source = "shrunk" if run.recipe.shrink is not None else "dense"
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
        run.recipe.prune,
        run.train,
        run.eval,
        progress=run.progress,
        log=run.log,
        on_round=on_round,
        done_rounds=done_rounds,
        reference=reference,
        label=run.label,
    )
    partial_done = save_pruned(run, model, outcome, base)
    partial.unlink(missing_ok=True)
    return partial_done


def save_pruned(
    run: Run, model: nn.Module, outcome: PruneOutcome, base: CheckpointMeta | None = None
) -> dict[str, Any]:
    """Write ``pruned.safetensors`` and return the phase's record (also used by the
    budget search, which chooses the rounds itself). ``base``: the metadata to start
    from (a shrunk network's), default ``run.base``."""
    base = base if base is not None else run.base
    errors = run.errors(model, outcome.test_error)
    meta = with_stage(base, "pruned", errors["test_error"], prune=outcome.details())
    save_checkpoint(run.file("pruned"), model, replace(meta, model=outcome.model_spec(meta.model)))
    return {
        "files": [run.file("pruned").name],
        **errors,
        "kept_fraction": outcome.sparsity.kept_fraction,
        "seconds": round(outcome.seconds, 1),
    }


def quantize_step(run: Run) -> dict[str, Any]:
    model, meta = run.load(run.file("pruned"))
    outcome = quantize_phase(
        model,
        run.recipe.quantize,
        run.train,
        run.eval,
        progress=run.progress,
        log=run.log,
        label=run.label,
    )
    return save_quantized(run, model, meta, outcome)


def save_quantized(
    run: Run, model: nn.Module, meta: CheckpointMeta, outcome: QuantizeOutcome
) -> dict[str, Any]:
    """Write ``quantized.safetensors`` (``meta``: the pruned model's) and return the
    phase's record."""
    errors = run.errors(model, outcome.test_error)
    meta = with_stage(meta, "quantized", errors["test_error"], quantize=outcome.details())
    save_checkpoint(run.file("quantized"), model, meta)
    clustered = "val_error_clustered" if run.val is not None else "test_error_clustered"
    return {
        "files": [run.file("quantized").name],
        **errors,
        clustered: outcome.test_error_clustered,
        "seconds": round(outcome.seconds, 1),
    }


def encode_step(run: Run) -> dict[str, Any]:
    model, meta = run.load(run.file("quantized"))
    final = run.run_dir / STAGE_FILES["P+Q+H"]
    # The file carries the compact metadata (its header counts in the rate); the phase
    # details stay in the checkpoints and the report.
    details = {**shrunk_marker(meta.details), "recipe_digest": run.recipe.digest()}
    file_meta = replace(meta, details=details, tool_version=__version__)
    # The decoded file is measured on the test set (checked equal to the quantized
    # model's test error) and, with a validation split, on that too.
    outcome = encode_phase(model, final, run.recipe.encode, file_meta, test=run.test,
                           val=run.val, log=run.log)  # fmt: skip
    assert outcome.test_error is not None
    errors = {"test_error": outcome.test_error}
    if outcome.val_error is not None:
        errors = {"val_error": outcome.val_error, **errors}
    blobs = stage_blobs(open_dcz(final))
    for stage in ("P", "P+Q"):
        path = run.run_dir / STAGE_FILES[stage]
        atomic_write(path, blobs[stage])
        run.log(f"[encode] {stage}: {path.name} {len(blobs[stage]):,} bytes")
    return {
        "files": list(STAGE_FILES.values()),
        **errors,
        "bytes": {s: len(b) for s, b in blobs.items()},
        "original_bytes": outcome.report.original_bytes,
        "seconds": round(outcome.seconds, 1),
    }


def _errors_text(errors: Mapping[str, float]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {100 * v:.2f}%" for k, v in errors.items())
