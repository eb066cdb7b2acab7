"""What every step of :func:`~deep_compression.pipeline.compress` shares (:class:`Run`):
the recipe, the run directory, the phase context, the metadata every file starts from,
the phases' digests, and what a planner already made in memory."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from torch.utils.data import Dataset

from deep_compression import __version__
from deep_compression import distributed as dist
from deep_compression.dcz import DczFile
from deep_compression.loading import load_model
from deep_compression.phases import PhaseContext
from deep_compression.recipe import NoRetrainRecipe, Recipe
from deep_compression.records import CheckpointMeta
from deep_compression.selection import paired_increase, per_image_errors
from deep_compression.shrink import shrunk_marker

__all__ = ["Given", "Run", "file_metadata_of"]


@dataclass(frozen=True)
class Given:
    """A phase's model that the planner already made for the chosen recipe, exactly as
    running that phase would (the replay tests hold it to that), with its outcome."""

    model: nn.Module
    outcome: Any  # the phase's outcome: PruneOutcome, QuantizeOutcome or RDReport


@dataclass
class Run:
    """What every phase step shares.

    Attributes:
        recipe: the recipe run (after a search: the one it chose).
        run_dir: where every file goes.
        ctx: the data and where lines go, for every phase.
        base: the metadata every file of the run starts from.
        digests: per phase, the digest of everything its output depends on.
        allow_code: the model may be the user's own code.
        checkpoint: the dense starting checkpoint (None: trained here).
        paired: measure the dense and the decoded model image by image, so that the
            report gives the final file's paired increase (searched and no-retrain runs).
        given: models a planner already made for the recipe (:class:`Given`).
        reference: the dense model's per-image errors per split (paired runs).
        metas: the metadata of the files written in this process, per phase.
        final: the final file as written in this process, opened from its bytes.
    """

    recipe: Recipe | NoRetrainRecipe
    run_dir: Path
    ctx: PhaseContext
    base: CheckpointMeta
    digests: dict[str, str]
    allow_code: bool = False
    checkpoint: Path | None = None
    paired: bool = False
    given: dict[str, Given] = field(default_factory=dict)
    reference: dict[str, np.ndarray] = field(default_factory=dict)
    metas: dict[str, CheckpointMeta] = field(default_factory=dict)
    final: DczFile | None = None

    def file(self, phase: str) -> Path:
        return self.run_dir / f"{phase}.safetensors"

    def load(self, path: Path) -> tuple[nn.Module, CheckpointMeta]:
        # Under torchrun rank 0 wrote the file: every rank waits for it first.
        dist.barrier(f"before reading {path.name}")
        return load_model(path, allow_code=self.allow_code)

    def splits(self) -> dict[str, Dataset]:
        """The measured splits by their short names: ``val`` (decisions) and ``test``
        (the report), or ``test`` alone."""
        if self.ctx.test is None:
            return {"test": self.ctx.eval}
        return {"val": self.ctx.eval, "test": self.ctx.test}

    def measure(self, model: nn.Module) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """The errors a phase records (``val_error``, ``test_error``) and, in a paired
        run, the per-image errors behind them (``(n,)`` bool per split)."""
        if not self.paired:
            return self.ctx.errors(model), {}
        vectors = {
            name: per_image_errors(model, split, np.arange(len(split)))
            for name, split in self.splits().items()
        }
        # 1 - correct / n, as evaluate() gives it: the same float, bit for bit.
        errors = {
            f"{name}_error": 1.0 - int(np.count_nonzero(~v)) / max(1, v.size)
            for name, v in vectors.items()
        }
        return errors, vectors

    def dense_reference(self) -> dict[str, np.ndarray]:
        """The dense model's per-image errors (measured again when the dense phase was
        reused from an earlier process)."""
        if not self.reference:
            dense, _ = self.load(self.file("dense"))
            self.reference = self.measure(dense)[1]
        return self.reference

    def increase(self, vectors: dict[str, np.ndarray], confidence: float) -> dict[str, dict]:
        """The paired error increase (points) of a model with per-image errors
        ``vectors`` over the dense model, per split."""
        reference = self.dense_reference()
        return {
            name: paired_increase(reference[name], v, confidence, scale=100.0).to_dict()
            for name, v in vectors.items()
        }


def file_metadata_of(
    recipe: Recipe | NoRetrainRecipe, meta: CheckpointMeta, base: CheckpointMeta
) -> CheckpointMeta:
    """The metadata the final file carries (its header counts in the rate): the compact
    metadata of the quantized checkpoint ``meta``, the phase details left in the
    checkpoints and the report. A no-retrain file carries the run's ``base`` as quantized
    and nothing else, as its search sized every candidate with it."""
    if isinstance(recipe, NoRetrainRecipe):
        return replace(base, stage="quantized", details={})
    details = {**shrunk_marker(meta.details), "recipe_digest": recipe.digest()}
    return replace(meta, details=details, tool_version=__version__)
