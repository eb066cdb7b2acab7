"""The run directory's state: which phases are done (``pipeline.json``) and the digest
of everything each phase depends on, so a run resumes where it stopped.

The phases, in order: ``dense``, ``shrunk`` (a ``[shrink]`` table), ``plan`` (a search
that chose the recipe: ``recipe.toml`` and ``search.json``), ``pruned``, ``quantized``,
``encoded``. A recipe run has no ``plan``; a no-retrain recipe has no ``pruned`` (its
quantizer prunes).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deep_compression import __version__
from deep_compression.errors import ConfigError
from deep_compression.fileio import write_json
from deep_compression.recipe import NoRetrainRecipe, Recipe, digest

__all__ = ["PHASES", "STAGE_FILES", "RunState", "file_digest", "phase_digests", "plan_digest"]

PHASES = ("dense", "shrunk", "plan", "pruned", "quantized", "encoded")
# The three real files of the per-stage table, the paper's P, P+Q, P+Q+H
# (defined in deep_compression.dcz.stages).
STAGE_FILES = {"P": "stage-p.dcz", "P+Q": "stage-pq.dcz", "P+Q+H": "model.dcz"}


def file_digest(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def phase_digests(recipe: Recipe | NoRetrainRecipe, source: str) -> dict[str, str]:
    """For each phase of ``recipe``, a digest of everything its output depends on
    (chained). A search's ``plan`` digest is :func:`plan_digest`."""
    d = recipe.to_dict()
    # The validation split changes what is trained on, so every phase depends on it.
    split = [d["validation"]] if "validation" in d else []
    dense = digest(
        source, d["model"], d["model_args"], d["dataset"], d["seed"], d.get("train"), *split
    )
    if "no_retrain" in d:  # quantized straight from the dense model
        quantized = digest(dense, d["no_retrain"])
        return {"dense": dense, "quantized": quantized, "encoded": digest(quantized, d["encode"])}
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


def plan_digest(dense: str, kind: str, settings: Mapping[str, Any]) -> str:
    """The digest of a search's ``plan`` phase: the dense model it starts from (and the
    starting recipe's split and seed, in ``dense``), the kind of search, its settings."""
    return digest(dense, kind, dict(settings))


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
