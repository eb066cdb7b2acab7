"""The validation split: a seeded hold-out that every decision is made on (pruning
schedule, stopping, bits per layer, which variant wins), so the test set is measured
once, for the report.

In a recipe (or on the command line as ``--val-size`` / ``--val-seed``)::

    validation = "auto"                     # the default: 5,000 images, or a tenth of a
                                            # training set smaller than 50,000
    validation = 5000                       # images held out of the training set
    validation = 0.1                        # or a fraction of it
    validation = { size = 5000, seed = 0 }  # the seed of the draw
    validation = 0                          # no split: errors are test errors (the
                                            # hand-tuned recipes, kept reproducible)
    validation = { source = "test" }        # where the images come from (below)

Where the held-out images come from (``source``; ``--val-from`` on the command line):

* ``"train"``: carved from the training set (the rest is trained on). Right for a model
  this project trains, or one known never to have seen those images.
* ``"val"``: the dataset's own validation split (an image folder's ``val/``, an ``.npz``'s
  ``x_val``, a callable returning three splits).
* ``"test"``: the test set cut in two seeded parts: every decision on the first
  (``size`` images; ``"auto"``: half), the report on the other. For a model trained
  elsewhere, whose training images may all have been seen: only test images are unseen.
* ``"auto"`` (the default): the dataset's own validation split when it has one, else
  carved from the training set. The drivers that start from a checkpoint resolve it with
  :meth:`ValidationConfig.resolve` first: a checkpoint that does not record the split it
  held out gets ``"test"``.

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

__all__ = [
    "DEFAULT_VAL_SIZE",
    "SOURCES",
    "ValidationConfig",
    "carve_validation",
    "split_indices",
]

# 5,000 images: MNIST's customary hold-out (55,000 / 5,000). The standard error of an error
# rate p measured on n images is sqrt(p (1 - p) / n): 0.18 points at p = 1.6%, 0.42 at 9%.
DEFAULT_VAL_SIZE = 5000
# Where a validation split may come from (see the module docs).
SOURCES = ("auto", "train", "val", "test")


@dataclass(frozen=True)
class ValidationConfig:
    """How the validation split is carved.

    Attributes:
        size: images held out (an integer), a fraction of the training set (a float in
            (0, 1)), ``"auto"`` (5,000, or a tenth of a smaller training set) or 0 for no
            validation split.
        seed: seed of the draw.
        source: where the images come from: ``"train"``, ``"val"``, ``"test"`` or
            ``"auto"`` (see the module docs).
    """

    size: int | float | str = "auto"
    seed: int = 0
    source: str = "auto"

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
        if self.source not in SOURCES:
            raise ConfigError(
                f"validation.source must be one of {', '.join(SOURCES)}, got {self.source!r}"
            )

    @property
    def enabled(self) -> bool:
        return self.size != 0

    def count(self, n: int) -> int:
        """Images held out of a set of ``n`` (the training set; with ``source = "test"``
        the test set, of which ``"auto"`` takes half)."""
        if self.size == "auto" and self.source == "test":
            k = n // 2
        elif self.size == "auto":
            k = min(DEFAULT_VAL_SIZE, max(1, n // 10))
        elif isinstance(self.size, float):
            k = round(self.size * n)
        else:
            k = int(self.size)
        if self.enabled and not 1 <= k < n:
            raise DataError(
                f"validation split of {self.size} images leaves nothing to "
                f"{'report on: the test' if self.source == 'test' else 'train on: the training'}"
                f" set has {n}"
            )
        return k

    @classmethod
    def from_value(cls, value: object) -> ValidationConfig:
        """From a recipe's ``validation``: a number or ``{size, seed}``."""
        if isinstance(value, ValidationConfig):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"size", "seed", "source"}
            if unknown:
                raise ConfigError(
                    f"validation: unknown keys {sorted(unknown)} (size, seed, source)"
                )
            return cls(**value)
        return cls(size=value)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        # "auto" is left out: recipes and checkpoints written before sources existed
        # keep their digests and compare equal.
        d: dict[str, Any] = {"size": self.size, "seed": self.seed}
        if self.source != "auto":
            d["source"] = self.source
        return d

    def resolve(self, has_own_val: bool, trusted_train: bool) -> ValidationConfig:
        """This config with ``source = "auto"`` made concrete.

        Args:
            has_own_val: the dataset brings a validation split.
            trusted_train: the model is known not to have trained on a carve of the
                training set (it was trained here, recording the split it held out, or
                it is about to be trained).

        Returns:
            ``"val"`` when the dataset has its own, else ``"train"`` when trusted, else
            ``"test"`` (a model trained elsewhere may have seen every training image).
        """
        if self.source != "auto" or not self.enabled:
            return self
        source = "val" if has_own_val else "train" if trusted_train else "test"
        return replace(self, source=source)

    def describe(self, data_val: int, data_test: int) -> str:
        """One line naming where the decision and report images come from."""
        where = {
            "train": "held out of the training images",
            "val": "the dataset's val/",
            "test": "one seeded part of the test images",
        }.get(self.source, "")
        report = "the other part of the test images" if self.source == "test" else "test"
        return (
            f"decisions on {data_val:,} images ({where}, seed {self.seed}); the report "
            f"on {data_test:,} ({report})"
        )


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
    """``data`` with a validation split from ``config.source``:

    * ``"auto"``: the dataset's own if it has one, else ``config``'s share of the training
      set (which keeps the rest);
    * ``"train"``: that share of the training set, even beside a dataset's own split;
    * ``"val"``: the dataset's own (an error without one);
    * ``"test"``: ``config``'s share of the test set (``"auto"``: half); the rest of the
      test set is the new ``test``, measured for the report only.

    ``config.size == 0`` returns ``data`` unchanged (``val`` stays ``None``: decisions then
    see the test set, as before).

    Raises:
        DataError: ``"val"`` for a dataset without one, or a split that leaves nothing.
    """
    if not config.enabled:
        return data
    if config.source == "val" or (config.source == "auto" and data.val is not None):
        if data.val is None:
            raise DataError(
                f"{data.info.name}: no validation split of its own (val/); choose "
                "--val-from train or test"
            )
        return data
    if config.source == "test":
        rest_idx, val_idx = split_indices(len(data.test), config)
        return replace(data, val=_take(data.test, val_idx), test=_take(data.test, rest_idx))
    train_idx, val_idx = split_indices(len(data.train), config)
    return replace(data, train=_take(data.train, train_idx), val=_take(data.train, val_idx))
