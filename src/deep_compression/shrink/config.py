"""The ``[shrink]`` table of a recipe: structured pruning, as one frozen dataclass::

[shrink]
criterion = "l1"            # l1, l2, bn, lasso or reduce (deep_compression.shrink.criteria)
keep = { "*" = 1.0, "conv1" = 8, "fc1" = 0.1 }   # per channel group (named by the
                            # first layer producing it): a fraction in (0, 1] or a count
lasso = 0.0                 # group-lasso strength during [shrink.train]
calibration = 256           # training images the reduce criterion measures on
[shrink.train]              # train.TrainConfig: training (with the penalty) before choosing
[shrink.retrain]            # train.TrainConfig: retraining the shrunk network
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deep_compression.errors import ConfigError
from deep_compression.recipe_io import from_table
from deep_compression.shrink.criteria import CRITERIA
from deep_compression.train import TrainConfig

__all__ = ["ShrinkConfig", "kept_count"]


def kept_count(keep: float | int, size: int) -> int:
    """Channels to keep out of ``size``: a count (int, at most ``size``) or a fraction
    (float, rounded, at least 1)."""
    if isinstance(keep, int):
        return min(keep, size)
    return max(1, min(size, int(math.floor(keep * size + 0.5))))


@dataclass(frozen=True)
class ShrinkConfig:
    """Structured pruning: which criterion, how many channels each group keeps, and the
    training before (with the group-lasso penalty) and after.

    Attributes:
        criterion: the removal order of a group's channels: ``"l1"``, ``"l2"`` (norm of
            each channel's filters and bias), ``"bn"`` (``|gamma|`` of the BatchNorm after
            it), ``"lasso"`` (norm of all the channel owns, after ``[shrink.train]`` with
            the penalty) or ``"reduce"`` (greedy, on what each channel adds to the next
            layers over a calibration batch).
        keep: per channel group (named by the first layer producing it; keys as in
            :mod:`deep_compression.layer_config`): a count >= 1 or a fraction in (0, 1].
        lasso: group-lasso strength ``lambda`` during ``[shrink.train]`` (0: none; > 0
            needs a ``[shrink.train]`` table with epochs > 0).
        calibration: training images the ``reduce`` criterion measures on.
        train: training with the penalty before channels are chosen (optional: none).
        retrain: retraining of the shrunk network (optional: none).
    """

    criterion: str = "l1"
    keep: Mapping[str, float | int] = field(default_factory=lambda: {"*": 1.0})
    lasso: float = 0.0
    calibration: int = 256
    train: TrainConfig | None = None
    retrain: TrainConfig | None = None

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise ConfigError(
                f"shrink.criterion must be one of {', '.join(CRITERIA)}, got {self.criterion!r}"
            )
        if not isinstance(self.keep, Mapping) or not self.keep:
            raise ConfigError(f"shrink.keep must be a table of layer -> amount, got {self.keep!r}")
        for key, v in self.keep.items():
            is_count = isinstance(v, int) and not isinstance(v, bool) and v >= 1
            is_fraction = isinstance(v, float) and 0.0 < v <= 1.0
            if not (is_count or is_fraction):
                raise ConfigError(
                    f"shrink.keep.{key} must be a fraction in (0, 1] or a count >= 1, got {v!r}"
                )
        lasso = self.lasso
        if isinstance(lasso, bool) or not isinstance(lasso, int | float) or not 0 <= lasso < 1:
            raise ConfigError(f"shrink.lasso must be a number in [0, 1), got {lasso!r}")
        cal = self.calibration
        if isinstance(cal, bool) or not isinstance(cal, int) or not 1 <= cal <= 65536:
            raise ConfigError(f"shrink.calibration must be an integer in 1..65536, got {cal!r}")
        if lasso > 0 and (self.train is None or self.train.epochs == 0):
            raise ConfigError("shrink.lasso needs a [shrink.train] table with epochs > 0")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "shrink") -> ShrinkConfig:
        return from_table(
            cls,
            d,
            where,
            {
                "keep": lambda v, w: dict(v) if isinstance(v, Mapping) else v,
                "train": lambda v, w: TrainConfig.from_dict(v, f"{where}.train"),
                "retrain": lambda v, w: TrainConfig.from_dict(v, f"{where}.retrain"),
            },
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "criterion": self.criterion,
            "keep": dict(self.keep),
            "lasso": self.lasso,
            "calibration": self.calibration,
        }
        if self.train is not None:
            d["train"] = self.train.to_dict()
        if self.retrain is not None:
            d["retrain"] = self.retrain.to_dict()
        return d
