"""The recipe: one TOML file that says what :func:`deep_compression.pipeline.compress`
does, mapped one-to-one onto :class:`Recipe`::

    model = "lenet-300-100"      # a built-in name, "path/to/net.py:name" (relative to the
                                 # recipe) or "package.module:name"
    model_args = { }             # keyword arguments of that callable
    dataset = "mnist"
    validation = 5000            # images held out of the training set for every decision
                                 # (deep_compression.data.ValidationConfig; 0: none)
    seed = 0
    [train]                      # deep_compression.train.TrainConfig (dense training,
                                 # used only when no checkpoint is given)
    [shrink]                     # deep_compression.shrink.ShrinkConfig (optional:
                                 # structured pruning, before [prune])
    [prune]                      # deep_compression.prune.PruneSchedule
    [[prune.rounds]] ...
    [quantize]                   # deep_compression.quantize.QuantizeConfig
    [encode]                     # deep_compression.encode.EncodeConfig (default: the
                                 # smallest coding, coder = "best", gap widths "auto";
                                 # coder = "huffman" alone is the paper's coding)

A recipe with a ``[no_retrain]`` table instead of ``[prune]``/``[quantize]`` is a
:class:`NoRetrainRecipe`: it compresses a trained checkpoint with no training step
(deep_compression.no_retrain.NoRetrainPlan; ``compress --recipe FILE CHECKPOINT``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from deep_compression.data import DatasetConfig, ValidationConfig
from deep_compression.encode import EncodeConfig
from deep_compression.errors import ConfigError
from deep_compression.layer_config import check_patterns
from deep_compression.models import resolve_spec
from deep_compression.no_retrain.config import NoRetrainPlan
from deep_compression.prune import PruneSchedule, prunable_layers
from deep_compression.quantize import QuantizeConfig, layer_bits
from deep_compression.recipe_io import from_table, load_config
from deep_compression.shrink import ShrinkConfig
from deep_compression.train import TrainConfig

__all__ = ["NoRetrainRecipe", "Recipe", "digest", "load_any_recipe", "load_recipe"]


def digest(*parts: Any) -> str:
    """A short hash of JSON-able ``parts`` (canonical JSON, SHA-256, 16 hex digits)."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Recipe:
    """Everything :func:`compress` needs; one-to-one with the recipe TOML file.

    Attributes:
        model: a built-in model name (``"lenet-300-100"``), ``"path/to/net.py:name"``
            (relative to the recipe) or ``"package.module:name"``: a callable returning
            an ``nn.Module``; importing a file runs its code (``--allow-code``).
        prune: the ``[prune]`` table: the prune -> retrain schedule.
        quantize: the ``[quantize]`` table: per-layer bits and centroid fine-tuning.
        encode: the ``[encode]`` table: how the ``.dcz`` file is coded (left out: the
            smallest coding, ``coder = "best"`` with gap widths ``"auto"``; the paper's
            coding is ``coder = "huffman"``).
        train: the ``[train]`` table: dense training, used only by ``compress --train``
            (no checkpoint given).
        dataset: a built-in name (``"mnist"``, ``"fashion-mnist"``), an image folder, an
            ``.npz`` file (paths relative to the recipe) or a ``dataset`` table.
        model_args: keyword arguments of the model callable.
        seed: seeds the initial weights of dense training (``--train``); recorded in
            every file of the run.
        validation: images held out for every decision: ``"auto"``, a count, a fraction,
            ``0`` (none: errors are test errors) or a ``validation`` table.
        shrink: the ``[shrink]`` table: structured pruning before ``[prune]``.
    """

    model: str
    prune: PruneSchedule
    quantize: QuantizeConfig
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    train: TrainConfig | None = None
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model_args: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    shrink: ShrinkConfig | None = None

    def __post_init__(self) -> None:
        _check_common(self)

    @classmethod
    def from_dict(
        cls,
        d: Mapping[str, Any],
        where: str = "recipe",
        base_dir: str | os.PathLike[str] | None = None,
    ) -> Recipe:
        """From the recipe's tables; paths in it (model file, dataset) are relative to
        ``base_dir`` (the recipe's directory)."""
        if isinstance(d, Mapping) and "no_retrain" in d:
            raise ConfigError(
                f"{where}: a [no_retrain] recipe has no training: run it with "
                "'compress --recipe FILE CHECKPOINT'"
            )
        for key in ("model", "prune", "quantize"):
            if isinstance(d, Mapping) and key not in d:
                raise ConfigError(f"{where}: missing {key!r}")
        return from_table(
            cls,
            d,
            where,
            {
                "train": lambda v, w: TrainConfig.from_dict(v, "train"),
                "shrink": lambda v, w: ShrinkConfig.from_dict(v),
                "prune": lambda v, w: PruneSchedule.from_dict(v),
                "quantize": lambda v, w: QuantizeConfig.from_dict(v),
                **_common_parsers(base_dir),
            },
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            **_common_dict(self),
            "prune": self.prune.to_dict(),
            "quantize": self.quantize.to_dict(),
            "encode": self.encode.to_dict(),
        }
        if self.train is not None:
            d["train"] = self.train.to_dict()
        # Only when there is a split: recipes without one keep their earlier digests.
        if self.validation.enabled:
            d["validation"] = self.validation.to_dict()
        if self.shrink is not None:  # likewise, only when used
            d["shrink"] = self.shrink.to_dict()
        return d

    def digest(self) -> str:
        """A short hash of the recipe's content, to tell runs of different recipes apart."""
        return digest(self.to_dict())

    def check_layers(self, model: nn.Module) -> None:
        """Every per-layer key of the recipe must match a layer of ``model``: checked
        before any training, so a typo costs seconds, not a pruning run."""
        layers = prunable_layers(model)
        for i, r in enumerate(self.prune.rounds, start=1):
            check_patterns(r.criteria, layers, f"prune.rounds[{i}].criteria")
        layer_bits(model, self.quantize)
        check_patterns(self.encode.gap_bits, layers, "encode.gap_bits")


def _check_common(recipe: Recipe | NoRetrainRecipe) -> None:
    """The checks both kinds of recipe share (model, dataset, seed, split)."""
    if not isinstance(recipe.model, str):
        raise ConfigError(f"model must be a string, got {recipe.model!r}")
    resolve_spec(recipe.model)  # a built-in or a well-formed 'file.py:name' spec
    if not isinstance(recipe.dataset, DatasetConfig):
        raise ConfigError(f"dataset must be a DatasetConfig, got {recipe.dataset!r}")
    seed = recipe.seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    if not isinstance(recipe.model_args, Mapping):
        raise ConfigError(f"model_args must be a table, got {recipe.model_args!r}")
    if not isinstance(recipe.validation, ValidationConfig):
        raise ConfigError(f"validation must be a ValidationConfig, got {recipe.validation!r}")


def _common_dict(recipe: Recipe | NoRetrainRecipe) -> dict[str, Any]:
    """The keys both kinds of recipe write first (model, its arguments, dataset, seed)."""
    return {
        "model": recipe.model,
        "model_args": dict(recipe.model_args),
        # A built-in stays its name, so older run digests still match.
        "dataset": recipe.dataset.root
        if recipe.dataset.format == "builtin"
        else recipe.dataset.to_dict(),
        "seed": recipe.seed,
    }


def _common_parsers(base_dir: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The parsers of the keys both kinds of recipe share."""
    return {
        "encode": lambda v, w: EncodeConfig.from_dict(v),
        "model_args": lambda v, w: dict(v) if isinstance(v, Mapping) else v,
        "dataset": lambda v, w: DatasetConfig.from_value(v, base_dir),
        "validation": lambda v, w: ValidationConfig.from_value(v),
        "model": lambda v, w: resolve_spec(v, base_dir) if isinstance(v, str) else v,
    }


@dataclass(frozen=True)
class NoRetrainRecipe:
    """A recipe without training: ``[no_retrain]`` (a
    :class:`~deep_compression.no_retrain.config.NoRetrainPlan`) instead of ``[train]``,
    ``[prune]`` and ``[quantize]``; run from a trained checkpoint. ::

        model = "lenet-5"
        dataset = "mnist"
        validation = "auto"          # the split the checkpoint held out, when it says so
        [no_retrain]
        max_error_increase = 0.1     # or lam = ... to quantize once
        [encode]                     # default: coder = "best", gap_bits = "auto"

    Attributes:
        model: as in :class:`Recipe`: a built-in name, ``"path/to/net.py:name"`` or
            ``"package.module:name"``.
        no_retrain: the ``[no_retrain]`` table: the quantizer's settings and the search.
        encode: the ``[encode]`` table, as in :class:`Recipe`.
        dataset: as in :class:`Recipe`: a built-in name, an image folder, an ``.npz`` file
            or a ``dataset`` table.
        model_args: keyword arguments of the model callable.
        seed: seeds the draw of the calibration images.
        validation: the split every decision is made on, as in :class:`Recipe`
            (``"auto"``: the split the checkpoint records, else half the test set).
    """

    model: str
    no_retrain: NoRetrainPlan
    encode: EncodeConfig = field(default_factory=EncodeConfig)  # the smallest coding
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model_args: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    def __post_init__(self) -> None:
        _check_common(self)
        if not isinstance(self.no_retrain, NoRetrainPlan):
            raise ConfigError(f"no_retrain must be a table, got {self.no_retrain!r}")

    @classmethod
    def from_dict(
        cls,
        d: Mapping[str, Any],
        where: str = "recipe",
        base_dir: str | os.PathLike[str] | None = None,
    ) -> NoRetrainRecipe:
        """From the recipe's tables (paths relative to ``base_dir``)."""
        if isinstance(d, Mapping):
            trained = [k for k in ("train", "shrink", "prune", "quantize") if k in d]
            if trained:
                raise ConfigError(
                    f"{where}: a [no_retrain] recipe has no [{trained[0]}] (no training step)"
                )
            if "model" not in d:
                raise ConfigError(f"{where}: missing 'model'")
        return from_table(
            cls,
            d,
            where,
            {
                "no_retrain": lambda v, w: NoRetrainPlan.from_dict(v),
                **_common_parsers(base_dir),
            },
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **_common_dict(self),
            "validation": self.validation.to_dict(),
            "no_retrain": self.no_retrain.to_dict(),
            "encode": self.encode.to_dict(),
        }

    def digest(self) -> str:
        """A short hash of the recipe's content."""
        return digest(self.to_dict())


def load_any_recipe(path: str | os.PathLike[str]) -> Recipe | NoRetrainRecipe:
    """Read a recipe TOML file of either kind: a :class:`NoRetrainRecipe` if it has a
    ``[no_retrain]`` table, else a :class:`Recipe` (see :func:`load_recipe`)."""
    base = Path(path).resolve().parent

    def parse(d: Mapping[str, Any]) -> Recipe | NoRetrainRecipe:
        if "no_retrain" in d:
            return NoRetrainRecipe.from_dict(d, base_dir=base)
        return Recipe.from_dict(d, base_dir=base)

    return load_config(path, parse)


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read a recipe TOML file; a model file or dataset it names is taken relative to the
    recipe.

    Raises:
        ConfigError: unreadable, invalid TOML, or invalid content (the message names the
            file and the field).
    """
    base = Path(path).resolve().parent
    return load_config(path, lambda d: Recipe.from_dict(d, base_dir=base))
