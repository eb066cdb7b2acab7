"""Datasets beyond the built-ins: what a recipe's ``dataset`` names, loaded as torch
datasets that stream (nothing has to fit in memory).

``dataset`` in a recipe (or ``--dataset`` on the command line) is one of::

    dataset = "mnist"                                   # a built-in (MNIST, Fashion-MNIST)
    dataset = "path/to/folder"                          # an image folder (see below)
    dataset = "path/to/arrays.npz"                      # numpy arrays
    dataset = { format = "imagefolder", root = "DIR", mean = [0.49, 0.48, 0.45],
                std = [0.25, 0.24, 0.26], size = [32, 32], name = "cifar10" }
    dataset = { format = "npz", root = "arrays.npz" }
    dataset = { format = "callable", root = "data.py:make", args = { split_seed = 0 } }

* **imagefolder**: ``DIR/train/<class>/*`` and ``DIR/test/<class>/*`` images (PNG, JPEG,
  BMP, GIF, WebP; ``DIR/val/`` too if present), classes in sorted folder order as
  torchvision's ``ImageFolder`` has them, read with Pillow one at a time. ``mean``/``std``
  (per channel, pixels scaled to [0, 1]) default to the training images' own statistics;
  ``size`` resizes every image, else all must share the first image's size; grey images
  give 1 channel, everything else 3 (or ``channels``).
* **npz**: ``x_train``, ``y_train``, ``x_test``, ``y_test`` (optionally ``x_val``,
  ``y_val``, ``classes``); images ``(N, H, W)`` or channels-last ``(N, H, W, C)``, uint8
  (scaled by 1/255) or float in [0, 1]; loaded without pickle.
* **callable**: ``file.py:name`` or ``package.module:name`` returning ``(train, test)`` or
  ``(train, val, test)`` map-style datasets of ``(x, y)``; importing it runs code, so it
  needs ``allow_code`` as model code does.

Paths in a recipe are relative to the recipe. What a deployer needs (input shape,
mean/std, class names) is :attr:`DatasetInfo.preprocessing`, written into every file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from deep_compression.data.arrays import load_npz
from deep_compression.data.folder import load_imagefolder
from deep_compression.data.idx import get_spec, load_dataset
from deep_compression.data.info import Data, DatasetConfig, DatasetInfo, floats, per_channel
from deep_compression.errors import ConfigError

__all__ = ["load_data"]


def _load_callable(config: DatasetConfig, allow_code: bool) -> Data:
    from deep_compression.models import import_callable

    if not allow_code:
        raise ConfigError(
            f"dataset {config.root!r} is Python code, and importing it runs that code: pass "
            "--allow-code (allow_code=True) if you trust it"
        )
    result = import_callable(config.root)(**config.args)
    if not isinstance(result, tuple) or len(result) not in (2, 3):
        raise ConfigError(
            f"dataset {config.root!r} must return (train, test) or (train, val, test)"
        )
    train, *rest = result
    val, test = (rest[0], rest[1]) if len(rest) == 2 else (None, rest[0])
    x0, _ = train[0]
    classes = tuple(str(c) for c in getattr(train, "classes", ())) or ()
    c = int(x0.shape[0])
    info = DatasetInfo(
        config.label,
        tuple(int(d) for d in x0.shape),
        tuple(per_channel(config.mean or (0.0,), c, "mean")),
        tuple(per_channel(config.std or (1.0,), c, "std")),
        classes,
    )
    return Data(train, test, info, val)


# --------------------------------------------------------------------------- entry point


def load_data(
    config: DatasetConfig,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    allow_code: bool = False,
    preprocessing: Mapping[str, Any] | None = None,
) -> Data:
    """Load the dataset ``config`` names.

    Args:
        config: the dataset.
        data_dir: where a built-in dataset's files are (see :mod:`~deep_compression.data.idx`).
        allow_code: a ``callable`` dataset may be imported.
        preprocessing: a model file's stored preprocessing, whose mean/std win over the
            dataset's own statistics (a model is evaluated as it was trained).

    Raises:
        DataError, ConfigError: missing or malformed data; code not allowed.
    """
    if preprocessing and config.format in ("imagefolder", "npz"):
        config = replace(
            config,
            mean=config.mean or floats(preprocessing.get("mean"), "mean"),
            std=config.std or floats(preprocessing.get("std"), "std"),
        )
    if config.format == "builtin":
        train, test = load_dataset(config.root, data_dir)
        spec = get_spec(config.root)
        info = DatasetInfo(
            spec.name,
            spec.input_shape,
            (spec.mean,),
            (spec.std,),
            tuple(str(i) for i in range(spec.num_classes)),
        )
        return Data(train, test, info)
    if config.format == "imagefolder":
        return load_imagefolder(config)
    if config.format == "npz":
        return load_npz(config)
    return _load_callable(config, allow_code)
