"""Typed records that travel between the stages: checkpoint metadata and run reports.

Both are plain frozen dataclasses with a documented JSON schema (``to_dict`` /
``from_dict``), so no stage reads another's output by guessing string keys. Neither
imports torch: the ``.dcz`` reader and the report tools use them as they are.

Checkpoint metadata (the JSON stored under the ``deep_compression`` key of a safetensors
checkpoint, and the ``meta`` object of a ``.dcz`` header)::

    {
      "model":         {"name": "lenet-5", "kwargs": {}},      # how to rebuild the network
      "stage":         "dense" | "pruned" | "quantized" | "decoded",
      "dataset":       "mnist" | null,                          # what it was trained on
      "preprocessing": {"input_shape": [1, 28, 28], "mean": [..], "std": [..]} | null,
      "seed":          0 | null,
      "test_error":    0.0066 | null,                           # fraction, not percent
      "details":       {"train": {...}, "prune": {...}, ...},   # what each phase did
      "tool_version":  "0.1.0"
    }

Keys written by earlier versions (``test_accuracy``, ``train_config``, ``prune_rounds``...)
are read into ``details`` unchanged, so older checkpoints keep loading.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from deep_compression import __version__
from deep_compression.errors import FormatError

__all__ = [
    "STAGES",
    "ModelSpec",
    "CheckpointMeta",
    "StageRow",
    "PhaseRow",
    "SearchSummary",
    "RunReport",
]

STAGES = ("dense", "shrunk", "pruned", "quantized", "decoded")
# What files written before the typed metadata called their stage (version-1 .dcz files
# named the storage variant; "unknown" was encode's fallback).
_LEGACY_STAGES = {"P": "pruned", "P+Q": "quantized", "P+Q+H": "quantized", "unknown": "dense"}


def _frozen(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d))


def _opt_number(d: Mapping[str, Any], key: str, where: str) -> float | None:
    value = d.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FormatError(f"{where}: {key} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ModelSpec:
    """How to rebuild a network: a built-in name and its keyword arguments."""

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kwargs", _frozen(self.kwargs))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kwargs": dict(self.kwargs)}

    @classmethod
    def from_dict(cls, d: object, where: str = "metadata") -> ModelSpec:
        if not isinstance(d, Mapping) or not isinstance(d.get("name"), str) or not d["name"]:
            raise FormatError(f"{where}: model must be an object with a 'name', got {d!r}")
        kwargs = d.get("kwargs", {})
        if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
            raise FormatError(f"{where}: model.kwargs must be a JSON object, got {kwargs!r}")
        return cls(d["name"], dict(kwargs))


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint or ``.dcz`` file says about the model it holds (schema above)."""

    model: ModelSpec
    stage: str = "dense"
    dataset: str | None = None
    preprocessing: Mapping[str, Any] | None = None
    seed: int | None = None
    test_error: float | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    tool_version: str = __version__

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise FormatError(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        object.__setattr__(self, "details", _frozen(self.details))
        if self.preprocessing is not None:
            object.__setattr__(self, "preprocessing", _frozen(self.preprocessing))

    @property
    def test_accuracy(self) -> float | None:
        return None if self.test_error is None else 1.0 - self.test_error

    def with_details(self, **phases: Any) -> CheckpointMeta:
        """A copy whose ``details`` also hold ``phases`` (``prune={...}``)."""
        return replace(self, details={**self.details, **phases})

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "stage": self.stage,
            "dataset": self.dataset,
            "preprocessing": None if self.preprocessing is None else dict(self.preprocessing),
            "seed": self.seed,
            "test_error": self.test_error,
            "details": dict(self.details),
            "tool_version": self.tool_version,
        }

    @classmethod
    def from_dict(cls, d: object, where: str = "metadata") -> CheckpointMeta:
        """Parse and validate; raises :class:`FormatError` naming ``where``."""
        if not isinstance(d, Mapping):
            raise FormatError(f"{where}: metadata must be a JSON object")
        model = ModelSpec.from_dict(d.get("model"), where)
        stage = d.get("stage", "dense")
        stage = _LEGACY_STAGES.get(stage, stage) if isinstance(stage, str) else stage
        if stage not in STAGES:
            raise FormatError(f"{where}: unknown stage {stage!r}")
        dataset = d.get("dataset")
        if dataset is not None and not isinstance(dataset, str):
            raise FormatError(f"{where}: dataset must be a string, got {dataset!r}")
        pre = d.get("preprocessing")
        if pre is not None and not isinstance(pre, Mapping):
            raise FormatError(f"{where}: preprocessing must be an object, got {pre!r}")
        seed = d.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise FormatError(f"{where}: seed must be an integer, got {seed!r}")
        test_error = _opt_number(d, "test_error", where)
        if test_error is None and d.get("test_accuracy") is not None:
            test_error = 1.0 - (_opt_number(d, "test_accuracy", where) or 0.0)
        details = d.get("details", {})
        if not isinstance(details, Mapping):
            raise FormatError(f"{where}: details must be an object")
        known = {f for f in cls.__dataclass_fields__} | {"test_accuracy"}
        legacy = {k: v for k, v in d.items() if k not in known}
        version = d.get("tool_version", "unknown")
        return cls(
            model=model,
            stage=stage,
            dataset=dataset,
            preprocessing=pre,
            seed=seed,
            test_error=test_error,
            details={**legacy, **details},
            tool_version=version if isinstance(version, str) else "unknown",
        )


# --------------------------------------------------------------------------- run reports


@dataclass(frozen=True)
class StageRow:
    """One row of the paper's per-stage table: a real file and its rate.

    ``stage`` is ``"P"``, ``"P+Q"`` or ``"P+Q+H"`` (see :mod:`deep_compression.dcz.stages`
    for the one definition of each), or ``"dense (float32)"`` for the original size.
    """

    stage: str
    bytes: int
    rate: float
    file: str | None = None


@dataclass(frozen=True)
class PhaseRow:
    """One phase of a run: the error it left the model at and the time it took."""

    phase: str
    test_error: float | None
    seconds: float
    note: str = ""
    val_error: float | None = None  # on the validation split, when the run had one


@dataclass(frozen=True)
class SearchSummary:
    """How a searched run chose its recipe (``compress --max-error-increase``); every
    candidate is in the run's ``search.json``.

    Attributes:
        kind: ``"budget"`` (pruning and bit widths, with retraining) or ``"no-retrain"``
            (the rate-distortion quantizer's ``lam``).
        max_error_increase: the budget, points of validation error over the dense model's.
        confidence: of each paired decision (candidate against the dense model, image by
            image).
        candidates: candidates measured.
        seconds: wall time of the search.
        chosen: what it chose, in words (``"importance gptq-fisher, lam 1.4e-06"``).
    """

    kind: str
    max_error_increase: float
    confidence: float
    candidates: int
    seconds: float
    chosen: str

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchSummary:
        return cls(
            kind=str(d["kind"]),
            max_error_increase=float(d["max_error_increase"]),
            confidence=float(d["confidence"]),
            candidates=int(d["candidates"]),
            seconds=float(d["seconds"]),
            chosen=str(d["chosen"]),
        )


@dataclass(frozen=True)
class RunReport:
    """The report of a finished ``compress`` run (``report.json``).

    Attributes:
        model, dataset: what was compressed.
        recipe_digest: short hash of the recipe.
        original_bytes: float32 bytes of the original floating-point tensors.
        stages: dense, P, P+Q, P+Q+H (each a real file decoding to the final model).
        phases: dense, pruned, clustered, fine-tuned, decoded errors and wall times.
        kept_fraction: weights kept by pruning, over all prunable layers.
        layers, breakdown, streams: :func:`deep_compression.dcz.summary.summarize` of
            the final file (per-layer table in the paper's columns, bytes by part,
            stream statistics).
        total_seconds: sum of the phases' wall times.
        splits: where the decisions' and the report's images came from (one line; empty
            without a validation split).
        search: how a searched run chose its recipe (None for a recipe run).
        increase: the final file's error increase over the dense model, paired image by
            image, per split (``"val"``, ``"test"``: points, bounds, images, confidence),
            when the run measured it (searched and no-retrain runs).
    """

    model: str
    dataset: str
    recipe_digest: str
    original_bytes: int
    stages: tuple[StageRow, ...]
    phases: tuple[PhaseRow, ...]
    kept_fraction: float
    layers: tuple[Mapping[str, Any], ...]
    breakdown: Mapping[str, int]
    streams: tuple[Mapping[str, Any], ...]
    total_seconds: float
    tool_version: str = __version__
    splits: str = ""
    search: SearchSummary | None = None
    increase: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def final(self) -> StageRow:
        return self.stages[-1]

    def phase(self, name: str) -> PhaseRow:
        for p in self.phases:
            if p.phase == name:
                return p
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dataset": self.dataset,
            "recipe_digest": self.recipe_digest,
            "original_bytes": self.original_bytes,
            "stages": [vars(s).copy() for s in self.stages],
            "phases": [vars(p).copy() for p in self.phases],
            "kept_fraction": self.kept_fraction,
            "layers": [dict(r) for r in self.layers],
            "breakdown": dict(self.breakdown),
            "streams": [dict(s) for s in self.streams],
            "total_seconds": self.total_seconds,
            "tool_version": self.tool_version,
            **({"splits": self.splits} if self.splits else {}),
            **({"search": self.search.to_dict()} if self.search is not None else {}),
            **({"increase": self._increase()} if self.increase else {}),
        }

    def _increase(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in self.increase.items()}

    @classmethod
    def from_dict(cls, d: object, where: str = "report") -> RunReport:
        if not isinstance(d, Mapping):
            raise FormatError(f"{where}: a report must be a JSON object")
        try:
            return cls(
                model=str(d["model"]),
                dataset=str(d["dataset"]),
                recipe_digest=str(d["recipe_digest"]),
                original_bytes=int(d["original_bytes"]),
                stages=tuple(StageRow(**s) for s in d["stages"]),
                phases=tuple(PhaseRow(**p) for p in d["phases"]),
                kept_fraction=float(d["kept_fraction"]),
                layers=tuple(d["layers"]),
                breakdown=dict(d["breakdown"]),
                streams=tuple(d["streams"]),
                total_seconds=float(d["total_seconds"]),
                tool_version=str(d.get("tool_version", "unknown")),
                splits=str(d.get("splits", "")),
                search=SearchSummary.from_dict(d["search"]) if d.get("search") else None,
                increase={str(k): dict(v) for k, v in d.get("increase", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{where}: not a run report of this version ({e!r})") from None
