"""Deep Compression for PyTorch: prune, quantize, entropy-code, ship one small file.

``import deep_compression as dc`` gives the Python API under short, stable names. Importing
it is cheap and does not import torch: each name is imported on first use (PEP 562), and
the ``.dcz`` reader (``dc.read``, ``dc.open_dcz``) needs numpy alone, so a file decodes
where torch is not installed. Names ending in ``_`` change a model in place (as in
PyTorch). The stages behind them, one subpackage each::

    data -> models -> train -> prune -> quantize -> coding (gaps, Huffman/ANS) -> dcz -> report

A quickstart (a trained ``model``; masks and codebooks live on the model as
parametrizations, so any optimizer can retrain between the steps)::

    import deep_compression as dc

    dc.prune_(model, {"*": dc.StdThreshold(1.0), "fc3": dc.KeepFraction(0.3)})
    # ... retrain: pruned weights stay exactly 0 ...
    dc.quantize_(model, dc.QuantizeConfig(bits={"*": 5, "fc1": 4}))
    # ... fine-tune: only the centroids (and biases) move ...
    report = dc.write(model, "model.dcz", dc.EncodeConfig(coder="best"))
    arrays, meta = dc.read("model.dcz")          # numpy only
    model2, meta = dc.load_model("model.dcz")    # an nn.Module again, in eval mode

The names (``->`` what a call returns; shapes in brackets):

Numpy only, no torch:

- ``read(path)`` -> ``(arrays, meta)``: decode a ``.dcz``; ``arrays`` maps state-dict
  names to float32 ndarrays of the tensors' shapes, ``meta`` is the file's metadata dict.
- ``open_dcz(path)`` -> ``DczFile``: validate a ``.dcz`` without decoding; its
  ``records()`` (the tensors as stored: sparse, quantized, dense), ``stats()``, ``metadata``.
- ``DeepCompressionError`` (the base), ``ConfigError`` (a bad setting; names the field),
  ``DataError``, ``FormatError`` (a bad file), ``DistributedError``; ``__version__``.

With torch:

- ``build_model(name, **kwargs)`` -> ``nn.Module``: a built-in model (``"lenet-300-100"``...).
- ``load_dataset(name)`` -> ``(train, test)`` ``Split``s of MNIST or Fashion-MNIST:
  ``x`` [N, 1, 28, 28] float32 normalised, ``y`` [N] int64.
- ``fit(model, train, test, TrainConfig(...))`` -> ``TrainResult``: train in place.
- ``evaluate(model, data)`` -> ``(mean cross-entropy, accuracy)``; the model maps
  [B, ...] inputs to [B, classes] logits.
- ``prune_(model, criteria)`` -> ``SparsityReport``: mask every ``Linear``/``ConvNd``
  weight; one criterion, or ``{"*": default, "layer": ...}`` of ``StdThreshold(s)``,
  ``KeepFraction(f)``, ``GlobalMagnitude(keep=f)`` (one threshold across layers).
- ``sparsity_report(model)`` -> ``SparsityReport``: kept weights per layer and overall.
- ``quantize_(model, QuantizeConfig(bits=...))`` -> ``QuantizationReport``: k-means weight
  sharing per layer (bits per layer, centroid initialisation).
- ``strip_pruning_(model)``, ``strip_quantization_(model)`` -> the model: make masks or
  shared weights permanent (plain ``weight`` parameters).
- ``rd_quantize_(model, NoRetrainConfig(lam=...), calibration=None)`` -> ``RDReport``:
  quantize without retraining, rate against distortion per layer; ``calibration`` is
  optional [N, ...] model inputs.
- ``write(model, path, EncodeConfig(...), metadata=None)`` -> ``EncodeReport``: encode to
  a ``.dcz`` (``file_bytes``, ``rate``, bytes per stage).
- ``load_model(path, model=None)`` -> ``(nn.Module, meta)``: decode a ``.dcz`` into a model
  in eval mode (the built-in one its metadata names, or your own plain ``model``).
- ``Recipe``, ``load_recipe(path)``: a compression recipe, one-to-one with its TOML file.
- ``compress(recipe, run_dir, checkpoint=None)`` -> ``RunReport``: run a recipe (train,
  prune and retrain, quantize and fine-tune, encode); resumable.
- ``compress_to_budget(recipe, checkpoint, run_dir, BudgetConfig(...))`` ->
  ``(RunReport, Recipe)``: search the recipe within an accuracy budget.
- ``compress_no_retrain(NoRetrainRecipe, checkpoint, run_dir)`` -> ``RunReport``: the
  no-retraining search within a budget, or one ``lam``.

Each name is the one documented where it lives (``dc.write`` is
:func:`deep_compression.encode.encode_model`, ``dc.read`` is
:func:`deep_compression.dcz.decode`, ``dc.load_model`` is
:func:`deep_compression.loading.load_dcz`); the modules hold the rest of the API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from deep_compression.errors import (
    ConfigError,
    DataError,
    DeepCompressionError,
    DistributedError,
    FormatError,
)

__version__ = "0.1.0"

# Face name -> (module, name there). Imported on first use, so ``import deep_compression``
# stays cheap and the numpy-only names never pull torch in.
_LAZY: dict[str, tuple[str, str]] = {
    # numpy only
    "read": ("deep_compression.dcz", "decode"),
    "open_dcz": ("deep_compression.dcz", "open_dcz"),
    # models, data, training
    "build_model": ("deep_compression.models", "build_model"),
    "load_dataset": ("deep_compression.data", "load_dataset"),
    "TrainConfig": ("deep_compression.train", "TrainConfig"),
    "fit": ("deep_compression.train", "fit"),
    "evaluate": ("deep_compression.train", "evaluate"),
    # pruning
    "prune_": ("deep_compression.prune", "prune_"),
    "StdThreshold": ("deep_compression.prune", "StdThreshold"),
    "KeepFraction": ("deep_compression.prune", "KeepFraction"),
    "GlobalMagnitude": ("deep_compression.prune", "GlobalMagnitude"),
    "sparsity_report": ("deep_compression.prune", "sparsity_report"),
    "strip_pruning_": ("deep_compression.prune", "strip_pruning_"),
    # quantization, with and without retraining
    "quantize_": ("deep_compression.quantize", "quantize_"),
    "QuantizeConfig": ("deep_compression.quantize", "QuantizeConfig"),
    "strip_quantization_": ("deep_compression.quantize", "strip_quantization_"),
    "rd_quantize_": ("deep_compression.no_retrain.quantize", "rd_quantize_"),
    "NoRetrainConfig": ("deep_compression.no_retrain.config", "NoRetrainConfig"),
    # the file
    "write": ("deep_compression.encode", "encode_model"),
    "EncodeConfig": ("deep_compression.encode", "EncodeConfig"),
    "load_model": ("deep_compression.loading", "load_dcz"),
    # whole runs
    "Recipe": ("deep_compression.recipe", "Recipe"),
    "NoRetrainRecipe": ("deep_compression.recipe", "NoRetrainRecipe"),
    "load_recipe": ("deep_compression.recipe", "load_recipe"),
    "compress": ("deep_compression.pipeline", "compress"),
    "BudgetConfig": ("deep_compression.budget", "BudgetConfig"),
    "compress_to_budget": ("deep_compression.budget", "compress_to_budget"),
    "compress_no_retrain": ("deep_compression.budget.no_retrain_run", "compress_no_retrain"),
}

# The stable names (tests/test_face.py checks each resolves and that _LAZY covers the rest).
__all__ = [
    "__version__",
    # errors
    "ConfigError",
    "DataError",
    "DeepCompressionError",
    "DistributedError",
    "FormatError",
    # the file, numpy only
    "open_dcz",
    "read",
    # models, data, training
    "TrainConfig",
    "build_model",
    "evaluate",
    "fit",
    "load_dataset",
    # pruning
    "GlobalMagnitude",
    "KeepFraction",
    "StdThreshold",
    "prune_",
    "sparsity_report",
    "strip_pruning_",
    # quantization, with and without retraining
    "NoRetrainConfig",
    "QuantizeConfig",
    "quantize_",
    "rd_quantize_",
    "strip_quantization_",
    # the file, with torch
    "EncodeConfig",
    "load_model",
    "write",
    # whole runs
    "BudgetConfig",
    "NoRetrainRecipe",
    "Recipe",
    "compress",
    "compress_no_retrain",
    "compress_to_budget",
    "load_recipe",
]


def __getattr__(name: str) -> Any:
    """Import ``name`` from its module on first use (PEP 562) and keep it here."""
    if name not in _LAZY:
        raise AttributeError(f"module 'deep_compression' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs see; never run (see tests/test_layering.py)
    from deep_compression.budget import BudgetConfig as BudgetConfig
    from deep_compression.budget import compress_to_budget as compress_to_budget
    from deep_compression.budget.no_retrain_run import compress_no_retrain as compress_no_retrain
    from deep_compression.data import load_dataset as load_dataset
    from deep_compression.dcz import decode as read
    from deep_compression.dcz import open_dcz as open_dcz
    from deep_compression.encode import EncodeConfig as EncodeConfig
    from deep_compression.encode import encode_model as write
    from deep_compression.loading import load_dcz as load_model
    from deep_compression.models import build_model as build_model
    from deep_compression.no_retrain.config import NoRetrainConfig as NoRetrainConfig
    from deep_compression.no_retrain.quantize import rd_quantize_ as rd_quantize_
    from deep_compression.pipeline import compress as compress
    from deep_compression.prune import GlobalMagnitude as GlobalMagnitude
    from deep_compression.prune import KeepFraction as KeepFraction
    from deep_compression.prune import StdThreshold as StdThreshold
    from deep_compression.prune import prune_ as prune_
    from deep_compression.prune import sparsity_report as sparsity_report
    from deep_compression.prune import strip_pruning_ as strip_pruning_
    from deep_compression.quantize import QuantizeConfig as QuantizeConfig
    from deep_compression.quantize import quantize_ as quantize_
    from deep_compression.quantize import strip_quantization_ as strip_quantization_
    from deep_compression.recipe import NoRetrainRecipe as NoRetrainRecipe
    from deep_compression.recipe import Recipe as Recipe
    from deep_compression.recipe import load_recipe as load_recipe
    from deep_compression.train import TrainConfig as TrainConfig
    from deep_compression.train import evaluate as evaluate
    from deep_compression.train import fit as fit
