"""What a recipe's ``dataset`` says (:class:`DatasetConfig`), what a loaded dataset is
(:class:`Data`) and what a deployer must know about its inputs (:class:`DatasetInfo`)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from deep_compression.data.idx import DATASETS, get_spec
from deep_compression.errors import ConfigError
from deep_compression.recipe_io import from_table

__all__ = ["FORMATS", "DatasetConfig", "DatasetInfo", "Data", "floats", "per_channel"]

FORMATS = ("builtin", "imagefolder", "npz", "callable")


def floats(value: object, where: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    items = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    ok = items and all(isinstance(v, int | float) and not isinstance(v, bool) for v in items)
    if not ok or not all(math.isfinite(float(v)) for v in items):
        raise ConfigError(f"{where} must be a number or a list of numbers, got {value!r}")
    return tuple(float(v) for v in items)


def _inline_table(text: str) -> dict[str, Any]:
    """A TOML inline table given on the command line."""
    import tomllib

    try:
        table = tomllib.loads(f"dataset = {text}")["dataset"]
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"dataset {text!r} is not a TOML inline table ({e})") from None
    if not isinstance(table, dict):
        raise ConfigError(f"dataset {text!r} is not a table")
    return table


@dataclass(frozen=True)
class DatasetConfig:
    """What a recipe's ``dataset`` says (see :mod:`deep_compression.data.sources`);
    validated on creation.

    Attributes:
        format: ``"builtin"``, ``"imagefolder"``, ``"npz"`` or ``"callable"``; given as a
            string, ``dataset`` is a built-in name, a folder or an ``.npz`` path.
        root: the built-in's name, the folder (``DIR/train/<class>/*``,
            ``DIR/test/<class>/*``), the ``.npz`` file, or the ``file.py:name`` callable
            returning ``(train, test)`` or ``(train, val, test)``; paths are relative to
            the recipe.
        name: the dataset's name in the files' metadata (default: the folder's or file's).
        mean: per-channel mean subtracted from pixels scaled to [0, 1] (default: the
            training images' own; a callable's: 0).
        std: per-channel standard deviation divided by (default: the training images'
            own; a callable's: 1).
        size: ``[height, width]`` every image of a folder is resized to (default: none;
            all images must then share the first one's size).
        channels: 1 (grey) or 3 (RGB) for an image folder (default: 1 if the first image
            is grey, else 3).
        args: keyword arguments of a ``callable`` dataset.
    """

    format: str = "builtin"
    root: str = "mnist"
    name: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    size: tuple[int, int] | None = None
    channels: int | None = None
    args: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(
                f"dataset.format must be one of {', '.join(FORMATS)}, got {self.format!r}"
            )
        if not isinstance(self.root, str) or not self.root:
            raise ConfigError(f"dataset.root must be a path or name, got {self.root!r}")
        if self.format == "builtin":
            get_spec(self.root)
        object.__setattr__(self, "mean", floats(self.mean, "dataset.mean"))
        object.__setattr__(self, "std", floats(self.std, "dataset.std"))
        if self.std is not None and min(self.std) <= 0:
            raise ConfigError(f"dataset.std must be positive, got {list(self.std)}")
        if self.size is not None:
            size = self.size
            if not (
                isinstance(size, Sequence)
                and len(size) == 2
                and all(isinstance(v, int) and 1 <= v <= 4096 for v in size)
            ):
                raise ConfigError(f"dataset.size must be [height, width] in 1..4096, got {size!r}")
            object.__setattr__(self, "size", (int(size[0]), int(size[1])))
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"dataset.channels must be 1 or 3, got {self.channels!r}")
        if not isinstance(self.args, Mapping):
            raise ConfigError(f"dataset.args must be a table, got {self.args!r}")

    @property
    def label(self) -> str:
        """The dataset's name in metadata: a built-in's name, ``name``, or the folder's."""
        if self.format == "builtin":
            return self.root
        return self.name or Path(self.root.split(":")[0]).stem or self.root

    @classmethod
    def from_value(
        cls, value: object, base_dir: str | os.PathLike[str] | None = None
    ) -> DatasetConfig:
        """From a recipe's ``dataset`` (a name, a path or a table); relative paths are
        taken against ``base_dir``. On the command line the table is written as in a
        recipe, ``{ root = "DIR", mean = [0.49, 0.48, 0.45], std = [0.25, 0.24, 0.26] }``;
        without ``format`` it is the one its ``root`` suggests (.npz, else a folder)."""
        if isinstance(value, str) and value.lstrip().startswith("{"):
            value = _inline_table(value)
            if "format" not in value and isinstance(value.get("root"), str):
                fmt = "npz" if value["root"].endswith(".npz") else "imagefolder"
                value = {"format": fmt, **value}
        if isinstance(value, str):
            if value in DATASETS:
                return cls("builtin", value)
            path = Path(base_dir or ".") / value
            if path.suffix == ".npz":
                return cls("npz", str(path.resolve()))
            if path.is_dir():
                return cls("imagefolder", str(path.resolve()))
            raise ConfigError(
                f"unknown dataset {value!r}; choose one of: {', '.join(sorted(DATASETS))}, or "
                "give an image folder (DIR/train/<class>/*), an .npz file or a table"
            )
        config = from_table(
            cls, value, "dataset", {"size": lambda v, w: tuple(v) if isinstance(v, list) else v}
        )
        if config.format in ("imagefolder", "npz"):
            config = replace(config, root=str((Path(base_dir or ".") / config.root).resolve()))
        return config

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": self.format, "root": self.root}
        for key in ("name", "mean", "std", "size", "channels"):
            value = getattr(self, key)
            if value is not None:
                d[key] = list(value) if isinstance(value, tuple) else value
        if self.args:
            d["args"] = dict(self.args)
        return d


@dataclass(frozen=True)
class DatasetInfo:
    """What a deployer must know about the inputs (stored in every file)."""

    name: str
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "scale": 1.0 / 255.0,
            "mean": list(self.mean),
            "std": list(self.std),
            "classes": list(self.classes),
            "formula": "x = (pixel * scale - mean) / std, per channel",
        }


@dataclass(frozen=True)
class Data:
    """The splits of a dataset (map-style datasets of ``(x (C, H, W), y)``) and its info.
    ``val`` is the dataset's own validation split, if it has one."""

    train: Dataset
    test: Dataset
    info: DatasetInfo
    val: Dataset | None = None


# --------------------------------------------------------------------------- callables


def per_channel(values: Sequence[float], c: int, what: str) -> list[float]:
    """``values`` for ``c`` channels: one value repeated, or exactly ``c`` of them."""
    if len(values) == 1:
        return list(values) * c
    if len(values) != c:
        raise ConfigError(f"dataset.{what} has {len(values)} values for {c} channels")
    return list(values)
