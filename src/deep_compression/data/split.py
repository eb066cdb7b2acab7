"""The validation split: a seeded hold-out of the training set that every decision is made
on (pruning schedule, stopping, bits per layer, which variant wins), so the test set is
measured once, for the report.

In a recipe (or on the command line as ``--val-size`` / ``--val-seed``)::

    validation = "auto"                     # the default: 5,000 images, or a tenth of a
                                            # training set smaller than 50,000
    validation = 5000                       # images held out of the training set
    validation = 0.1                        # or a fraction of it
    validation = { size = 5000, seed = 0 }  # the seed of the draw
    validation = 0                          # no split: errors are test errors (the
                                            # hand-tuned recipes, kept reproducible)

A dataset that brings its own validation split (an image folder's ``val/``, an ``.npz``'s
``x_val``, a callable returning three splits) uses it, and nothing is carved.

The draw is a numpy ``PCG64`` permutation of the training indices, the same on every
platform and every process of a distributed run; the held-out indices are sorted, so the
split depends only on ``(len(train), size, seed)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from deep_compression.data.idx import Split
from deep_compression.data.info import Data
from deep_compression.errors import ConfigError, DataError

__all__ = ["DEFAULT_VAL_SIZE", "ValidationConfig", "carve_validation", "split_indices"]

# 5,000 images: MNIST's customary hold-out (55,000 / 5,000). The standard error of an error
# rate p measured on n images is sqrt(p (1 - p) / n): 0.18 points at p = 1.6%, 0.42 at 9%.
DEFAULT_VAL_SIZE = 5000


@dataclass(frozen=True)
class ValidationConfig:
    """How the validation split is carved.

    Attributes:
        size: images held out (an integer), a fraction of the training set (a float in
            (0, 1)), ``"auto"`` (5,000, or a tenth of a smaller training set) or 0 for no
            validation split.
        seed: seed of the draw.
    """

    size: int | float | str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        size = self.size
        if size == "auto":
            pass
        elif isinstance(size, bool) or not isinstance(size, int | float):
            raise ConfigError(f"validation.size must be a number or 'auto', got {size!r}")
        if isinstance(size, float) and not 0.0 < size < 1.0:
            raise ConfigError(
                f"validation.size must be an image count or a fraction in (0, 1), got {size!r}"
            )
        if isinstance(size, int) and size < 0:
            raise ConfigError(f"validation.size must be >= 0, got {size!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"validation.seed must be an integer >= 0, got {self.seed!r}")

    @property
    def enabled(self) -> bool:
        return self.size != 0

    def count(self, n: int) -> int:
        """Images held out of a training set of ``n``."""
        if self.size == "auto":
            k = min(DEFAULT_VAL_SIZE, max(1, n // 10))
        elif isinstance(self.size, float):
            k = round(self.size * n)
        else:
            k = int(self.size)
        if self.enabled and not 1 <= k < n:
            raise DataError(
                f"validation split of {self.size} images leaves nothing to train on: the "
                f"training set has {n}"
            )
        return k

    @classmethod
    def from_value(cls, value: object) -> ValidationConfig:
        """From a recipe's ``validation``: a number or ``{size, seed}``."""
        if isinstance(value, ValidationConfig):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"size", "seed"}
            if unknown:
                raise ConfigError(f"validation: unknown keys {sorted(unknown)} (size, seed)")
            return cls(**value)
        return cls(size=value)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "seed": self.seed}


def split_indices(n: int, config: ValidationConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)``: sorted int64 indices into a training set of ``n``."""
    k = config.count(n)
    perm = np.random.Generator(np.random.PCG64(config.seed)).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def _take(data: Dataset, idx: np.ndarray) -> Dataset:
    if isinstance(data, Split):
        index = torch.from_numpy(idx)
        return Split(data.x[index], data.y[index])  # in memory still: the fast path
    return Subset(data, idx.tolist())


def carve_validation(data: Data, config: ValidationConfig) -> Data:
    """``data`` with a validation split: its own if it has one, else ``config``'s share of
    the training set (which keeps the rest). ``config.size == 0`` returns ``data``
    unchanged (``val`` stays ``None``: decisions then see the test set, as before)."""
    if data.val is not None or not config.enabled:
        return data
    train_idx, val_idx = split_indices(len(data.train), config)
    return replace(data, train=_take(data.train, train_idx), val=_take(data.train, val_idx))
