"""The whole pipeline, driven by one recipe (:mod:`deep_compression.recipe`):
dense -> [shrink] -> prune -> quantize -> encode -> report.

:func:`compress` is a short loop over the phases of :mod:`deep_compression.phases`,
each writing one file into the run directory (``dense.safetensors``, ``shrunk.safetensors``
with a ``[shrink]`` table, ``pruned.safetensors``, ``quantized.safetensors``, ``model.dcz``
with its stage files ``stage-p.dcz`` and ``stage-pq.dcz``) and recording in
``pipeline.json`` a digest of everything it depends on. Run again on the same
directory, finished phases whose digest still matches are reused (so changing
``[encode]`` re-encodes without re-pruning); pruning resumes after its last round.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from deep_compression import __version__
from deep_compression import distributed as dist
from deep_compression.checkpoint import read_meta, save_checkpoint
from deep_compression.data import load_data
from deep_compression.dcz import open_dcz
from deep_compression.dcz.stages import stage_blobs
from deep_compression.errors import ConfigError
from deep_compression.fileio import atomic_write, file_digest, write_json
from deep_compression.loading import load_model
from deep_compression.models import make_model
from deep_compression.phases import (
    Log,
    encode_phase,
    prune_phase,
    quantize_phase,
    shrink_phase,
    test_error,
    train_phase,
    with_stage,
)
from deep_compression.progress import log as default_log
from deep_compression.prune import RoundResult
from deep_compression.recipe import Recipe, digest, load_recipe
from deep_compression.records import CheckpointMeta, ModelSpec, RunReport
from deep_compression.report.markdown import report_markdown
from deep_compression.report.run import build_report
from deep_compression.shrink import SHRUNK_KEY, shrunk_marker
from deep_compression.train import seed_everything

__all__ = [
    "Recipe",
    "load_recipe",
    "compress",
    "copy_final",
    "PHASES",
    "STAGE_FILES",
]

PHASES = ("dense", "shrunk", "pruned", "quantized", "encoded")
# The three real files of the per-stage table, the paper's P, P+Q, P+Q+H
# (defined in deep_compression.dcz.stages).
STAGE_FILES = {"P": "stage-p.dcz", "P+Q": "stage-pq.dcz", "P+Q+H": "model.dcz"}


def phase_digests(recipe: Recipe, source: str) -> dict[str, str]:
    """For each phase, a digest of everything its output depends on (chained)."""
    d = recipe.to_dict()
    dense = digest(source, d["model"], d["model_args"], d["dataset"], d["seed"], d.get("train"))
    # Without [shrink] the chain is as before, so earlier runs' digests still match.
    shrunk = digest(dense, d["shrink"]) if "shrink" in d else dense
    pruned = digest(shrunk, d["prune"])
    quantized = digest(pruned, d["quantize"])
    return {
        "dense": dense,
        "shrunk": shrunk,
        "pruned": pruned,
        "quantized": quantized,
        "encoded": digest(quantized, d["encode"]),
    }


# --------------------------------------------------------------------------- run state


@dataclass
class RunState:
    """``pipeline.json``: what each finished phase measured, and the digest of the recipe
    parts it depends on."""

    path: Path
    recipe_digest: str | None = None
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def open(cls, run_dir: Path, restart: bool) -> RunState:
        path = run_dir / "pipeline.json"
        if path.exists() and not restart:
            try:
                doc = json.loads(path.read_text())
                return cls(path, doc.get("recipe_digest"), dict(doc["phases"]))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise ConfigError(f"{path}: unreadable run state ({e}); use --restart") from None
        return cls(path)

    def done(self, phase: str, digest: str) -> bool:
        info = self.phases.get(phase)
        if info is None or info.get("digest") != digest:
            return False
        return all((self.path.parent / f).exists() for f in info.get("files", []))

    def record(self, phase: str, digest: str, info: dict[str, Any]) -> None:
        self.phases[phase] = {**info, "digest": digest}
        # A redone phase invalidates everything after it.
        for later in PHASES[PHASES.index(phase) + 1 :]:
            self.phases.pop(later, None)
        doc = {"tool_version": __version__, "recipe_digest": self.recipe_digest}
        write_json(self.path, {**doc, "phases": self.phases})


# --------------------------------------------------------------------------- the phases


@dataclass
class _Run:
    """What every phase step of :func:`compress` shares."""

    recipe: Recipe
    run_dir: Path
    train: Dataset
    test: Dataset
    base: CheckpointMeta
    digests: dict[str, str]
    progress: bool
    log: Log
    allow_code: bool

    def file(self, phase: str) -> Path:
        return self.run_dir / f"{phase}.safetensors"

    def load(self, path: Path) -> tuple[nn.Module, CheckpointMeta]:
        # Under torchrun rank 0 wrote the file: every rank waits for it first.
        dist.barrier(f"before reading {path.name}")
        return load_model(path, allow_code=self.allow_code)


def _dense_step(run: _Run, checkpoint: Path | None) -> dict[str, Any]:
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
            run.test,
            run.recipe.train,
            progress=run.progress,
            log=run.log,
            desc="dense",
        )
        how = f"trained {run.recipe.train.epochs} epochs"
        details = {"train": outcome.details()}
    error = test_error(model, run.test)
    save_checkpoint(run.file("dense"), model, with_stage(run.base, "dense", error, **details))
    run.log(f"[dense] {how}: test error {100 * error:.2f}%")
    return {
        "files": [run.file("dense").name],
        "test_error": error,
        "how": how,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _shrink_step(run: _Run) -> dict[str, Any]:
    model, meta = run.load(run.file("dense"))
    config = run.recipe.shrink
    assert config is not None
    o = shrink_phase(model, config, run.train, run.test, progress=run.progress, log=run.log)
    meta = with_stage(meta, "shrunk", o.test_error, shrink=o.details(), **{SHRUNK_KEY: True})
    save_checkpoint(run.file("shrunk"), model, replace(meta, model=o.model_spec(meta.model, model)))
    return {"files": [run.file("shrunk").name], "test_error": o.test_error,
            "params": o.report.params[1], "dense_bytes": o.report.float_bytes[0],
            "seconds": round(o.seconds, 1)}  # fmt: skip


def _prune_step(run: _Run) -> dict[str, Any]:
    source = "shrunk" if run.recipe.shrink is not None else "dense"
    model, src = run.load(run.file(source))  # a shrunk network's spec rebuilds it
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
        run.test,
        progress=run.progress,
        log=run.log,
        on_round=on_round,
        done_rounds=done_rounds,
        reference=reference,
    )
    meta = with_stage(base, "pruned", outcome.test_error, prune=outcome.details())
    save_checkpoint(run.file("pruned"), model, replace(meta, model=outcome.model_spec(meta.model)))
    partial.unlink(missing_ok=True)
    return {
        "files": [run.file("pruned").name],
        "test_error": outcome.test_error,
        "kept_fraction": outcome.sparsity.kept_fraction,
        "seconds": round(outcome.seconds, 1),
    }


def _quantize_step(run: _Run) -> dict[str, Any]:
    model, meta = run.load(run.file("pruned"))
    outcome = quantize_phase(
        model, run.recipe.quantize, run.train, run.test, progress=run.progress, log=run.log
    )
    meta = with_stage(meta, "quantized", outcome.test_error, quantize=outcome.details())
    save_checkpoint(run.file("quantized"), model, meta)
    return {
        "files": [run.file("quantized").name],
        "test_error": outcome.test_error,
        "test_error_clustered": outcome.test_error_clustered,
        "seconds": round(outcome.seconds, 1),
    }


def _encode_step(run: _Run) -> dict[str, Any]:
    model, meta = run.load(run.file("quantized"))
    final = run.run_dir / STAGE_FILES["P+Q+H"]
    # The file carries the compact metadata (its header counts in the rate); the phase
    # details stay in the checkpoints and the report.
    file_meta = replace(
        meta,
        details={**shrunk_marker(meta.details), "recipe_digest": run.recipe.digest()},
        tool_version=__version__,
    )
    outcome = encode_phase(model, final, run.recipe.encode, file_meta, test=run.test, log=run.log)
    blobs = stage_blobs(open_dcz(final))
    for stage in ("P", "P+Q"):
        path = run.run_dir / STAGE_FILES[stage]
        atomic_write(path, blobs[stage])
        run.log(f"[encode] {stage}: {path.name} {len(blobs[stage]):,} bytes")
    return {
        "files": list(STAGE_FILES.values()),
        "test_error": outcome.test_error,
        "bytes": {s: len(b) for s, b in blobs.items()},
        "original_bytes": outcome.report.original_bytes,
        "seconds": round(outcome.seconds, 1),
    }


# --------------------------------------------------------------------------- compress


def _source(recipe: Recipe, checkpoint: Path | None) -> tuple[str, CheckpointMeta | None]:
    """A description of the starting point (for the digests) and the checkpoint's
    metadata (None for a plain state dict), after checking that checkpoint and recipe
    agree."""
    if checkpoint is None:
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
    source, ckpt_meta = _source(recipe, ckpt)
    recipe.check_layers(make_model(recipe.model, recipe.model_args, allow_code=allow_code))
    digests = phase_digests(recipe, source)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir}: is a file")
    state = RunState.open(run_dir, restart)
    run_key = digest(source, recipe.digest())
    if state.phases and state.recipe_digest != run_key and not force:
        raise ConfigError(
            f"{run_dir} holds a run of another recipe or checkpoint; pass --force to redo "
            "the phases that changed, --restart to start over, or choose another --out-dir"
        )
    state.recipe_digest = run_key
    data = load_data(recipe.dataset, data_dir, allow_code=allow_code)
    base = CheckpointMeta(
        model=ckpt_meta.model if ckpt_meta else ModelSpec(recipe.model, recipe.model_args),
        dataset=recipe.dataset.label,
        preprocessing=data.info.preprocessing,
        seed=recipe.seed,
        details={"dataset_source": recipe.dataset.to_dict()},
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "recipe.json", recipe.to_dict())
    run = _Run(recipe, run_dir, data.train, data.test, base, digests, progress, log, allow_code)
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "dense": lambda: _dense_step(run, ckpt),
        **({"shrunk": lambda: _shrink_step(run)} if recipe.shrink is not None else {}),
        "pruned": lambda: _prune_step(run),
        "quantized": lambda: _quantize_step(run),
        "encoded": lambda: _encode_step(run),
    }
    done = [p for p in steps if state.done(p, digests[p])]
    dist.check_same_value(json.dumps(done), "resume")  # every rank resumes alike
    for phase, step in steps.items():
        if state.done(phase, digests[phase]):
            log(f"[{phase}] reused from an earlier run in {run_dir}")
            continue
        state.record(phase, digests[phase], step())
    report = build_report(run_dir / STAGE_FILES["P+Q+H"], state.phases, recipe)
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
