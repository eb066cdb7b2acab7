"""Rebuild a model from any file this project writes: checkpoint or ``.dcz``.

This is the one place that turns stored tensors back into a working ``nn.Module``:

* :func:`load_model`: a safetensors checkpoint, parametrizations (pruning masks,
  quantized weights) re-registered from the names of its buffers;
* :func:`load_dcz`: a ``.dcz`` file (decoded with numpy, :mod:`deep_compression.dcz`),
  optionally with its pruned fully connected layers as CSR
  :class:`~deep_compression.sparse.SparseLinear`;
* :func:`load_any`: either, by suffix.

It sits after the stages in the import order (it needs their parametrization classes);
:mod:`deep_compression.checkpoint` below it only reads and writes files.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from deep_compression.checkpoint import read_state
from deep_compression.checkpoint.fit import (
    PARAMETRIZED_KEY,
    batchnorm_counters,
    cast_to_model,
    match_keys,
    stored_shapes,
)
from deep_compression.dcz import DenseTensor, QuantizedTensor, SparseTensor, Tensor, open_dcz
from deep_compression.dcz.reader import DczFile, to_dense
from deep_compression.errors import ConfigError, FormatError
from deep_compression.models import make_model
from deep_compression.progress import log
from deep_compression.prune import PruningMask
from deep_compression.quantize import QuantizedWeight
from deep_compression.records import CheckpointMeta, ModelSpec
from deep_compression.shrink import SHRUNK_KEY, resize_to_
from deep_compression.sparse import SparseLinear, sparsify_

__all__ = [
    "build_from_meta",
    "restore_parametrizations",
    "load_state_",
    "load_model",
    "load_dcz",
    "load_any",
]

# load_dcz(sparse=True) swaps a layer when at least this fraction of its weights is
# pruned: sparsify_'s default, where CSR (value + int32 column per kept weight) starts to
# take less memory than the dense float32 weight.
_MIN_SPARSITY = 0.5


def build_from_meta(meta: CheckpointMeta, *, allow_code: bool = False) -> nn.Module:
    """The (untrained) model ``meta.model`` describes.

    A built-in is rebuilt by name; the user's own code (``net.py:name``) only with
    ``allow_code`` (see :func:`deep_compression.models.make_model`): a file never makes
    this import code on its own.

    Raises:
        ConfigError: the spec names code and ``allow_code`` is not given, or it fails.
    """
    return make_model(meta.model.name, meta.model.kwargs, allow_code=allow_code)


def _first(keys: Iterable[str], n: int = 3) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    # A file's key with a newline would break the one-line error: such keys are quoted.
    return ", ".join(k if k.isprintable() else repr(k) for k in keys[:n]) + more


def load_state_(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    where: str,
    *,
    assign: bool = False,
    absent: Iterable[str] = (),
) -> None:
    """``model.load_state_dict(state)``, strict, with a one-line error naming the keys.

    Two differences of published checkpoints are made good, nothing else: a BatchNorm's
    missing ``num_batches_tracked`` (files from before PyTorch 0.4.1) is a zero counter,
    and floating tensors of another precision (float16, bfloat16) are cast to the model's,
    which the log says in one line.

    Args:
        model, state: as for ``load_state_dict``.
        where: names the source in errors.
        assign: ``load_state_dict(assign=True)`` (the model is on the meta device).
        absent: keys of the model deliberately not in ``state``.

    Raises:
        FormatError: missing or unexpected keys (the first few of each named), or a
            shape mismatch (the first named).
    """
    expected = set(model.state_dict()) - set(absent)
    missing, unexpected = expected - set(state), set(state) - expected
    counters = batchnorm_counters(model, missing)
    missing -= counters.keys()
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_first(missing)}")
        if unexpected:
            parts.append(f"unexpected {_first(unexpected)}")
        raise FormatError(f"{where}: tensors do not fit the model: {'; '.join(parts)}")
    own = model.state_dict()
    for key, value in state.items():
        if tuple(own[key].shape) != tuple(value.shape):
            raise FormatError(
                f"{where}: tensors do not fit the model: {key} has shape "
                f"{tuple(value.shape)}, the model needs {tuple(own[key].shape)}"
            )
    state, cast = cast_to_model({**state, **counters}, own)
    if cast:
        log(f"{where}: {cast}")
    try:
        model.load_state_dict(state, strict=False, assign=assign)
    except RuntimeError as e:  # e.g. a dtype torch cannot copy
        first = str(e).strip().splitlines()[-1].strip()
        raise FormatError(f"{where}: tensors do not fit the model: {first}") from None


def restore_parametrizations(
    model: nn.Module, state: dict[str, torch.Tensor], where: str = "checkpoint"
) -> None:
    """Register on ``model`` the parametrizations a saved state dict implies.

    A state dict of a pruned or quantized model holds keys such as
    ``fc1.parametrizations.weight.original`` and ``fc1.parametrizations.weight.0.mask``.
    The set of buffer names tells which parametrization it was: ``{mask}`` is a
    :class:`~deep_compression.prune.PruningMask`, ``{codebook, indices, mask}`` a
    :class:`~deep_compression.quantize.QuantizedWeight`. Shapes are checked against the
    layer before anything is registered; ``load_state_dict`` then fills in the values.

    Raises:
        FormatError: unknown parametrization, missing layer or mismatched shapes.
    """
    groups: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = PARAMETRIZED_KEY.match(key)
        if m:
            groups.setdefault((m.group(1) or "", m.group(2)), {})[m.group(4) or "original"] = value
    modules = dict(model.named_modules())
    for (layer_name, tensor_name), parts in groups.items():
        layer = modules.get(layer_name)
        target = getattr(layer, tensor_name, None) if layer is not None else None
        if not isinstance(target, torch.Tensor):
            raise FormatError(f"{where}: no tensor {layer_name}.{tensor_name} in the model")
        names = set(parts) - {"original"}
        shape = target.shape
        for part, value in parts.items():
            if part != "codebook" and value.shape != shape:
                raise FormatError(
                    f"{where}: {layer_name}.{tensor_name} {part} has shape "
                    f"{tuple(value.shape)}, the layer needs {tuple(shape)}"
                )
        if names == {"mask"}:
            p: nn.Module = PruningMask(parts["mask"])
        elif names == {"codebook", "indices", "mask"}:
            if parts["codebook"].ndim != 1:
                raise FormatError(f"{where}: {layer_name}.{tensor_name} codebook is not 1-D")
            if parts["indices"].is_floating_point() or parts["indices"].is_complex():
                raise FormatError(f"{where}: {layer_name}.{tensor_name} indices are not integers")
            try:
                p = QuantizedWeight(parts["codebook"], parts["indices"], parts["mask"])
            except ValueError as e:
                raise FormatError(f"{where}: {layer_name}.{tensor_name}: {e}") from None
        else:
            raise FormatError(
                f"{where}: unknown parametrization of {layer_name}.{tensor_name} "
                f"(buffers {sorted(names)})"
            )
        parametrize.register_parametrization(layer, tensor_name, p, unsafe=True)


def load_model(
    path: str | os.PathLike[str],
    *,
    model: str | None = None,
    model_args: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    allow_code: bool = False,
) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the model stored in a checkpoint (see :func:`read_state`) and load its weights.

    Args:
        path: the checkpoint.
        model: the model spec (built-in name, ``net.py:name`` or ``package.module:name``)
            when the file does not say it, or to override what it says.
        model_args: its keyword arguments (with ``model``).
        dataset: the dataset, when the file does not say it.
        allow_code: the model may be the user's own code (imported, so run): the CLI
            sets it when the user names the model or passes ``--allow-code``.

    Returns:
        ``(model, metadata)`` with the model in eval mode. A plain state dict gets
        metadata built from the arguments (stage ``dense``).

    Raises:
        ConfigError: no model known for a plain state dict, or code not allowed.
        FormatError: bad file, or the tensors do not fit the model (the first missing and
            unexpected keys named).
    """
    state, meta = read_state(path)
    if meta is None:
        if model is None:
            raise ConfigError(
                f"{path}: a plain state dict does not say which model it holds: pass --model "
                "(a built-in name or 'path/to/net.py:name')"
            )
        meta = CheckpointMeta(model=ModelSpec(model, model_args or {}), dataset=dataset)
    elif model is not None:
        meta = replace(meta, model=ModelSpec(model, model_args or meta.model.kwargs))
    if dataset is not None:
        meta = replace(meta, dataset=dataset)
    net = build_from_meta(meta, allow_code=allow_code)
    # A wrapper's prefix (model., _orig_mod., ...) is removed only if the names then fit
    # the model better; an error then names the renamed keys and says what was removed.
    state, removed = match_keys(state, net.state_dict().keys())
    where = f"{path} ({meta.model.name}{f'; keys without {removed!r}' if removed else ''})"
    if meta.details.get(SHRUNK_KEY) is True:  # structured pruning: layers as stored
        resize_to_(net, stored_shapes(state), str(path))
    restore_parametrizations(net, state, str(path))
    load_state_(net, state, where)
    net.eval()
    return net, meta


def load_dcz(
    path: str | os.PathLike[str] | DczFile,
    model: nn.Module | None = None,
    *,
    sparse: bool = False,
    allow_code: bool = False,
) -> tuple[nn.Module, CheckpointMeta]:
    """Decode a ``.dcz`` file into a model, in eval mode.

    Args:
        path: the file, or one opened already (:func:`~deep_compression.dcz.open_dcz`,
            e.g. from the bytes just written: not read again).
        model: a plain (unparametrized) model to load into; ``None`` rebuilds the model
            the file's metadata names: a built-in, or the user's own code only with
            ``allow_code`` (a file never makes the reader import code on its own).
        sparse: run the pruned fully connected layers as
            :class:`~deep_compression.sparse.SparseLinear` (CSR) instead of dense
            ``nn.Linear``: every plain ``nn.Linear`` whose weight the file stores pruned
            (``sparse`` or ``quantized`` encoding) with at least half of it pruned, the
            default rule of :func:`~deep_compression.sparse.sparsify_`. Their CSR arrays
            are built from the file's kept positions and values directly, never from a
            dense copy of the weight; every other tensor loads as usual.

    Returns:
        ``(model, metadata)``.

    Raises:
        FormatError: bad file, or its tensors do not fit the model.
    """
    f = path if isinstance(path, DczFile) else open_dcz(path)
    path = f.where
    records = f.records()
    meta = CheckpointMeta.from_dict(f.metadata, str(path))
    built = model is None
    if built:
        # On the meta device: no memory and no random initialisation for tensors the file
        # then replaces; load_state_dict(assign=True) makes the decoded arrays the
        # parameters instead of copying them in (VGG-16, measured: peak RSS 2.5x -> 1.8x
        # the dense float32 model, load time 1.4 s -> 0.9 s).
        with torch.device("meta"):
            model = build_from_meta(meta, allow_code=allow_code)
    if meta.details.get(SHRUNK_KEY) is True:  # structured pruning: layers as stored
        shapes = {r.name: r.array.shape if isinstance(r, DenseTensor) else r.shape for r in records}
        resize_to_(model, shapes, str(path))
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ConfigError("load_dcz needs a plain model (remove its parametrizations first)")
    swap = _sparse_layer_records(model, records, str(path)) if sparse else {}
    swapped = {f"{name}.weight" for name in swap}
    state = {r.name: torch.from_numpy(to_dense(r)) for r in records if r.name not in swapped}
    del records  # the swapped layers' positions live on in their CSR arrays only
    # The swapped layers' dense weights are deliberately not loaded; any other missing or
    # unexpected key is an error, as with strict loading.
    load_state_(model, state, str(path), assign=built, absent=swapped)
    for name, record in swap.items():
        _replace_module(model, name, _sparse_linear(record, model.get_submodule(name)))
    # Every tensor of a built-in model is in its state dict, so none is left on "meta".
    assert not built or not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    model.eval()
    return model, meta


def _sparse_layer_records(
    model: nn.Module, records: list[Tensor], where: str
) -> dict[str, SparseTensor | QuantizedTensor]:
    """Layer name -> the file's record of its weight, for the layers to run as CSR."""
    modules = dict(model.named_modules())
    out: dict[str, SparseTensor | QuantizedTensor] = {}
    for r in records:
        if not isinstance(r, SparseTensor | QuantizedTensor) or not r.name.endswith(".weight"):
            continue
        name = r.name[: -len(".weight")]
        layer = modules.get(name)
        # Exactly nn.Linear, as sparsify_ does: a subclass may read a dense .weight.
        if type(layer) is not nn.Linear:
            continue
        if tuple(r.shape) != tuple(layer.weight.shape):
            raise FormatError(
                f"{where}: tensors do not fit the model: {r.name} has shape "
                f"{tuple(r.shape)}, the model needs {tuple(layer.weight.shape)}"
            )
        numel = math.prod(r.shape)
        if numel and numel - r.positions.size >= _MIN_SPARSITY * numel:
            out[name] = r
    return out


def _sparse_linear(record: SparseTensor | QuantizedTensor, layer: nn.Linear) -> SparseLinear:
    """The :class:`SparseLinear` of ``layer`` with the weight of ``record`` (never densified).

    The file's positions are flat row-major indices, strictly increasing (the gap decoder
    guarantees it), which is CSR order: row ``p // in``, column ``p % in``.
    """
    out_f, in_f = record.shape
    positions = record.positions
    if isinstance(record, SparseTensor):
        values = np.asarray(record.values, dtype=np.float32)
    else:
        values = np.asarray(record.codebook, dtype=np.float32)[record.indices]
    crow = np.zeros(out_f + 1, dtype=np.int64)
    np.cumsum(np.bincount(positions // in_f, minlength=out_f), out=crow[1:])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support")
        weight = torch.sparse_csr_tensor(
            torch.from_numpy(crow),
            torch.from_numpy(positions % in_f),
            torch.from_numpy(values),
            (out_f, in_f),
            check_invariants=True,  # O(nnz), and a file is untrusted input
        )
    bias = layer.bias.detach() if layer.bias is not None else None
    return SparseLinear(weight, bias)


def _replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def load_any(
    path: str | os.PathLike[str],
    *,
    sparse: bool = False,
    model: str | None = None,
    model_args: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    allow_code: bool = False,
) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the model stored in ``path`` (any checkpoint, or ``.dcz``), in eval mode.

    Args:
        path: the file.
        sparse: run pruned fully connected layers as CSR
            :class:`~deep_compression.sparse.SparseLinear`: for a ``.dcz``, those the file
            stores pruned (see :func:`load_dcz`); for a checkpoint, those
            :func:`~deep_compression.sparse.sparsify_` picks (at least half of the weights
            masked out or zero).
        model, model_args, dataset, allow_code: as for :func:`load_model`.

    Returns:
        ``(model, metadata)``.

    Raises:
        FormatError: unknown file type or a malformed file.
    """
    path = Path(path)
    if path.suffix == ".dcz":
        into = make_model(model, model_args, allow_code=allow_code) if model is not None else None
        net, meta = load_dcz(path, into, sparse=sparse, allow_code=allow_code)
        return net, (replace(meta, dataset=dataset) if dataset is not None else meta)
    net, meta = load_model(
        path, model=model, model_args=model_args, dataset=dataset, allow_code=allow_code
    )
    return (sparsify_(net) if sparse else net), meta
