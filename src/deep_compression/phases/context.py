"""What every phase runs with (:class:`PhaseContext`), the error a phase measures
(:func:`test_error`) and the metadata a phase's file starts from (:func:`with_stage`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from deep_compression.errors import ConfigError
from deep_compression.progress import log as default_log
from deep_compression.records import CheckpointMeta
from deep_compression.train import evaluate

__all__ = ["Log", "TASKS", "PhaseContext", "pct", "silent", "test_error", "with_stage"]

Log = Callable[[str], None]

# What a model is judged on. Classification (top-1 error) only for now; a language-model
# task (loss per token) is the next one.
TASKS = ("classification",)


def silent(_: str) -> None:
    """A log that drops every line."""


@dataclass(frozen=True)
class PhaseContext:
    """What every phase runs with, besides the model and its config.

    Attributes:
        train: the training split (retraining, fine-tuning, calibration); None for a
            phase that only measures (encoding).
        eval: the split each phase measures after each step and decides on: the
            validation split when there is one, else the test split.
        test: with a validation split, the test split, measured once per phase for the
            report only; None when ``eval`` is the test split itself.
        task: what the model is judged on (:data:`TASKS`).
        seed: the run's seed.
        progress: progress bars (or lines) through training.
        log: where the phases' lines go.
    """

    train: Dataset | None
    eval: Dataset
    test: Dataset | None = None
    task: str = "classification"
    seed: int = 0
    progress: bool = True
    log: Log = default_log

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")

    @property
    def label(self) -> str:
        """The name of :attr:`eval` in log lines: "validation" or "test"."""
        return "validation" if self.test is not None else "test"

    @property
    def training(self) -> Dataset:
        """:attr:`train`, which a training phase needs."""
        if self.train is None:
            raise ConfigError("this phase needs a training split")
        return self.train

    def quiet(self) -> PhaseContext:
        """The same context without progress bars or log lines (a search's candidates)."""
        return replace(self, progress=False, log=silent)

    def errors(self, model: nn.Module, eval_error: float | None = None) -> dict[str, float]:
        """The errors a phase records: on :attr:`eval` (``eval_error`` if measured
        already) and, with a validation split, on :attr:`test` too, for the report."""
        measured = test_error(model, self.eval) if eval_error is None else eval_error
        if self.test is None:
            return {"test_error": measured}
        return {"val_error": measured, "test_error": test_error(model, self.test)}


def pct(x: float) -> str:
    """``0.0123`` as ``1.23%``."""
    return f"{100 * x:.2f}%"


def test_error(model: nn.Module, split: Dataset) -> float:
    """Top-1 error of ``model`` on ``split`` (a fraction)."""
    return 1.0 - evaluate(model, split)[1]


def with_stage(
    meta: CheckpointMeta, stage: str, error: float | None, **details: Any
) -> CheckpointMeta:
    """``meta`` for the next stage: its name, the error measured now, the phase details."""
    return replace(meta, stage=stage, test_error=error).with_details(**details)
