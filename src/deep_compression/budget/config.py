"""What the budget search may spend: the accuracy budget, the wall time, and the epochs
each kind of step trains for (:class:`BudgetConfig`); the clock that plans around the
wall time (:class:`Clock`); and the record of every candidate tried (:class:`Trial`)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from deep_compression.errors import ConfigError
from deep_compression.train import TrainConfig

__all__ = ["BudgetConfig", "Clock", "Trial", "RETRAIN", "FINETUNE"]

# Retraining after each pruning round: the hand-tuned LeNet recipes' settings (about 1/5
# of the dense learning rate, light weight decay, one-pixel shifts for images).
RETRAIN = TrainConfig(epochs=3, lr=0.01, weight_decay=1e-4, schedule="cosine")
# Centroid fine-tuning after k-means (the paper fine-tunes the shared values only).
FINETUNE = TrainConfig(epochs=2, optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="cosine")


@dataclass(frozen=True)
class BudgetConfig:
    """How the search runs.

    Attributes:
        max_error_increase: the budget, in percentage points of validation error above
            the dense model's (0.5 means 1.60% -> at most 2.10%).
        max_minutes: wall-time budget of the whole search (None: no limit); epochs per
            round are cut, and pruning stops early, to fit it.
        seed: seeds every retraining and fine-tuning run of the search.
        round_epochs: retraining epochs after each pruning round.
        polish_epochs: retraining epochs after the last round (at the chosen sparsity).
        finetune_epochs: centroid fine-tuning epochs of each quantization candidate.
        first_keep: kept fraction of the most prunable layer after round 1.
        step: each round keeps this fraction of what the most prunable layer kept
            before; after a round that breaks the budget it becomes ``sqrt(step)``.
        min_step: pruning stops when the step would remove less than ``1 - min_step``.
        max_rounds: at most this many pruning rounds.
        bits: the uniform bit widths tried first (descending); each layer is then
            lowered one bit at a time, largest layer first, down to ``min_bits``.
        min_bits: the fewest bits a layer may get.
        augment: retraining shifts images by up to this many pixels (None: 1 for image
            inputs of at least 8 x 8, else 0).
        confidence: a candidate is kept when its error increase over the dense model,
            paired on the same images, is within the budget with this confidence.
    """

    max_error_increase: float
    max_minutes: float | None = None
    seed: int = 0
    round_epochs: int = 3
    polish_epochs: int = 15
    finetune_epochs: int = 2
    first_keep: float = 0.5
    step: float = 0.6
    min_step: float = 0.93
    max_rounds: int = 24
    bits: tuple[int, ...] = (6, 5, 4, 3)
    min_bits: int = 2
    augment: int | None = None
    confidence: float = 0.9

    def __post_init__(self) -> None:
        p = self.max_error_increase
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p < 100:
            raise ConfigError(f"max error increase must be in [0, 100) points, got {p!r}")
        m = self.max_minutes
        if m is not None and (isinstance(m, bool) or not isinstance(m, int | float) or m <= 0):
            raise ConfigError(f"max minutes must be positive, got {m!r}")
        for name in ("round_epochs", "polish_epochs", "finetune_epochs", "max_rounds", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {v!r}")
        if not 0 < self.first_keep <= 1 or not 0 < self.step < self.min_step < 1:
            raise ConfigError("need 0 < first_keep <= 1 and 0 < step < min_step < 1")
        if not self.bits or any(not 1 <= b <= 16 for b in self.bits) or not 1 <= self.min_bits:
            raise ConfigError(f"bits must be in 1..16, got {self.bits}, min {self.min_bits}")
        c = self.confidence
        if isinstance(c, bool) or not isinstance(c, int | float) or not 0.5 <= c < 1:
            raise ConfigError(f"confidence must be in [0.5, 1), got {c!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class Clock:
    """Wall time since the search started, against ``max_minutes``."""

    max_minutes: float | None
    start: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        """Seconds left (infinite without a limit)."""
        if self.max_minutes is None:
            return math.inf
        return 60.0 * self.max_minutes - self.elapsed()

    def affords(self, seconds: float) -> bool:
        return seconds <= self.left()


@dataclass(frozen=True)
class Trial:
    """One candidate the search measured: what it was, its validation error, whether it
    was kept, and when (seconds since the start)."""

    stage: str  # "sensitivity", "prune", "polish" or "bits"
    params: dict[str, Any]
    val_error: float
    accepted: bool
    seconds: float
    # The paired comparison with the dense model that decided (prune and bits steps).
    verdict: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
