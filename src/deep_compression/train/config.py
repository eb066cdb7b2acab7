"""What :func:`~deep_compression.train.fit` is told (:class:`TrainConfig`, one-to-one with a
recipe's ``[train]`` table) and what it returns (:class:`TrainResult`, per-epoch
:class:`EpochStats`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from deep_compression.errors import ConfigError
from deep_compression.recipe_io import from_table

# Named augmentations: (shift pixels, horizontal flips).
AUGMENT_PRESETS = {"none": (0, False), "shift": (1, False), "crop-flip": (4, True)}
_OPTIMIZERS = ("sgd", "adam")
_SCHEDULES = ("cosine", "step", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """How to train (or retrain). One-to-one with a ``[train]`` table in a recipe.

    Attributes:
        epochs: passes over the training set (0 is allowed: nothing is trained).
        batch_size: images per step, over all ranks together (the global batch: under
            N processes each rank takes about ``batch_size / N`` of them).
        optimizer: ``"sgd"`` (with momentum, Nesterov) or ``"adam"``.
        lr: initial learning rate, for the global batch (the same with 1 process or N).
        momentum: SGD momentum (ignored by Adam).
        weight_decay: L2 penalty coefficient (coupled, as in Caffe and the paper).
        schedule: ``"cosine"`` (to 0 at the end), ``"step"`` (x0.1 at 50% and 75%) or
            ``"constant"``.
        augment: random translations of up to ``augment`` pixels, the background filling
            the border (a random crop with that much padding; 0 disables), or a named
            preset: ``"none"``, ``"shift"`` (1 pixel: digits) or ``"crop-flip"`` (4 pixels
            and horizontal flips: natural images, as for CIFAR).
        flip: flip each image horizontally with probability 1/2.
        seed: seeds the initial weights (when training from scratch), shuffling, dropout
            and augmentation. Every rank shuffles alike; dropout and augmentation draw
            from a stream of their own per rank.
    """

    epochs: int = 20
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    augment: int | str = 0
    seed: int = 0
    flip: bool = False

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"train.{name} {why}, got {getattr(self, name)!r}")

        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise bad("epochs", "must be an integer >= 0")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise bad("batch_size", "must be an integer >= 1")
        if self.optimizer not in _OPTIMIZERS:
            raise bad("optimizer", f"must be one of {_OPTIMIZERS}")
        if self.schedule not in _SCHEDULES:
            raise bad("schedule", f"must be one of {_SCHEDULES}")
        if not isinstance(self.lr, int | float) or not (0 < self.lr < math.inf):
            raise bad("lr", "must be a positive number")
        if not isinstance(self.momentum, int | float) or not 0 <= self.momentum < 1:
            raise bad("momentum", "must be in [0, 1)")
        if not isinstance(self.weight_decay, int | float) or not 0 <= self.weight_decay < 1:
            raise bad("weight_decay", "must be in [0, 1)")
        if isinstance(self.augment, str):
            if self.augment not in AUGMENT_PRESETS:
                raise bad(
                    "augment", f"must be an integer in 0..8 or one of {sorted(AUGMENT_PRESETS)}"
                )
            shift, flip = AUGMENT_PRESETS[self.augment]
            object.__setattr__(self, "augment", shift)
            object.__setattr__(self, "flip", self.flip or flip)
        if (
            isinstance(self.augment, bool)
            or not isinstance(self.augment, int)
            or not 0 <= self.augment <= 8
        ):
            raise bad("augment", "must be an integer in 0..8")
        if not isinstance(self.flip, bool):
            raise bad("flip", "must be true or false")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed", "must be an integer >= 0")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not self.flip:  # only when used: recipes without it keep their digests
            del d["flip"]
        return d

    def merged(self, overrides: object, where: str) -> TrainConfig:
        """This config with the fields of the table ``overrides`` replaced (a round's
        ``retrain = { epochs = 8 }`` over the schedule's ``[prune.retrain]``)."""
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"{where}: expected a table of training settings, got {overrides!r}")
        return TrainConfig.from_dict({**self.to_dict(), **overrides}, where)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "train") -> TrainConfig:
        """Build from a recipe table; unknown keys are a :class:`ConfigError`."""
        return from_table(cls, d, where)


@dataclass
class EpochStats:
    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    seconds: float


@dataclass
class TrainResult:
    """Per-epoch statistics and the final test accuracy of one :func:`fit` call."""

    history: list[EpochStats] = field(default_factory=list)
    test_accuracy: float = float("nan")

    @property
    def test_error(self) -> float:
        return 1.0 - self.test_accuracy

    @property
    def seconds_per_epoch(self) -> float:
        return sum(h.seconds for h in self.history) / max(1, len(self.history))
