"""The torch side of the compressed file: model -> ``.dcz`` -> model.

:func:`encode_model` reads each tensor of a (pruned and/or quantized) model in its plain
state-dict name (``fc1.weight``, what ``strip_*`` would leave) and writes it as

* ``quantized`` when a :class:`~deep_compression.quantize.QuantizedWeight` determines it
  (``weight = codebook[indices] * mask``);
* ``sparse`` when only :class:`~deep_compression.prune.PruningMask` parametrizations
  apply (``weight = original * mask``);
* ``dense`` otherwise (biases, unpruned layers, buffers).

:func:`load_dcz` decodes a file (numpy, :mod:`deep_compression.dcz`) into a rebuilt
built-in model or into a plain model you pass; with ``sparse=True`` its pruned fully
connected layers run as CSR :class:`~deep_compression.sparse.SparseLinear` layers.
"""

from __future__ import annotations

import math
import os
import re
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from deep_compression.coding.gaps import best_gap_bits
from deep_compression.dcz import (
    CODER_CHOICES,
    DEFAULT_CHUNK,
    DenseTensor,
    QuantizedTensor,
    SparseTensor,
    Tensor,
    TensorStats,
    open_dcz,
    write_dcz,
)
from deep_compression.dcz.lossless import record_from_array
from deep_compression.dcz.reader import to_dense
from deep_compression.errors import ConfigError, FormatError
from deep_compression.layer_config import check_patterns, resolve
from deep_compression.prune import PruningMask
from deep_compression.quantize import QuantizedWeight
from deep_compression.sparse import SparseLinear

__all__ = [
    "DEFAULT_GAP_BITS",
    "EncodeReport",
    "model_tensors",
    "plain_state_dict",
    "encode_model",
    "load_dcz",
]

# The paper's gap fields: 5 bits for fully connected layers, 8 for convolutions.
DEFAULT_GAP_BITS = {"linear": 5, "conv": 8}
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_PARAM_KEY = re.compile(r"^(?:(.*)\.)?parametrizations\.(\w+)\.(?:original|\d+\..+)$")

GapBits = int | str | Mapping[str, int | str] | None

# load_dcz(sparse=True) swaps a layer when at least this fraction of its weights is
# pruned: sparsify_'s default, where CSR (value + int32 column per kept weight) starts to
# take less memory than the dense float32 weight.
_MIN_SPARSITY = 0.5


def _plain_names(model: nn.Module) -> dict[str, tuple[str, str]]:
    """Plain state-dict name -> (module name, tensor name), in state-dict order."""
    out: dict[str, tuple[str, str]] = {}
    for key in model.state_dict():
        m = _PARAM_KEY.match(key)
        if m:
            module_name, tname = m.group(1) or "", m.group(2)
        else:
            module_name, _, tname = key.rpartition(".")
        plain = f"{module_name}.{tname}" if module_name else tname
        out.setdefault(plain, (module_name, tname))
    return out


def _gap_bits_for(
    gap_bits: GapBits, module_name: str, module: nn.Module, positions: np.ndarray, coder: str
) -> int:
    default = DEFAULT_GAP_BITS["conv" if isinstance(module, _CONV) else "linear"]
    if gap_bits is None:
        bits: int | str = default
    elif isinstance(gap_bits, int | str):
        bits = gap_bits
    else:
        # A mapping without "*" falls back to the layer type's default for unmatched layers.
        bits = resolve({"*": default, **gap_bits}, module_name, "gap_bits")
    if bits == "auto":
        return best_gap_bits(positions, coder)
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise ConfigError(f"gap_bits for {module_name}: expected an int or 'auto', got {bits!r}")
    return bits


def model_tensors(
    model: nn.Module, gap_bits: GapBits = None, coder: str = "huffman"
) -> list[Tensor]:
    """The model's tensors as ``.dcz`` records, by plain state-dict name, in order.

    Args:
        model: any ``nn.Module``; parametrized layers are read through their
            parametrizations.
        gap_bits: gap field width: ``None`` for the paper's defaults (5 for ``Linear``,
            8 for ``ConvNd``), an int for every layer, ``"auto"`` (per layer, the width
            that makes the gap stream smallest under ``coder``), or a per-layer mapping of
            those such as ``{"*": 5, "conv*": 8, "fc1": "auto"}`` (layers it does not
            match keep the default).
        coder: the coder the file will use (only ``"auto"`` gap widths depend on it).

    Raises:
        ConfigError: a ``gap_bits`` key that matches no pruned layer.
    """
    if coder not in CODER_CHOICES:
        raise ConfigError(f"coder must be one of {', '.join(CODER_CHOICES)}, got {coder!r}")
    modules = dict(model.named_modules())
    names = _plain_names(model)
    sparse_layers = [
        mod for mod, t in names.values() if parametrize.is_parametrized(modules[mod], t)
    ]
    if isinstance(gap_bits, Mapping):
        check_patterns(gap_bits, sparse_layers, "gap_bits")
    records: list[Tensor] = []
    with torch.no_grad():
        for plain, (mod_name, tname) in names.items():
            module = modules[mod_name]
            if not parametrize.is_parametrized(module, tname):
                value = getattr(module, tname).detach().cpu().numpy()
                if tname == "weight":
                    # A plain weight that is already sparse or few-valued (a decoded .dcz)
                    # is stored as such, bit for bit; otherwise it stays dense.
                    records.append(record_from_array(plain, value))
                else:
                    records.append(DenseTensor(plain, value))
                continue
            plist = list(module.parametrizations[tname])
            if isinstance(plist[-1], QuantizedWeight):
                # The last parametrization ignores its input: the weight is exactly
                # codebook[indices] * mask whatever came before. (So that product, which
                # on VGG-16 cost more than writing the file, is never computed here.)
                q = plist[-1]
                mask = q.mask.detach().cpu().numpy().reshape(-1)
                positions = np.flatnonzero(mask)
                bits = _gap_bits_for(gap_bits, mod_name, module, positions, coder)
                indices = q.indices.detach().cpu().numpy().reshape(-1)[positions]
                codebook = q.codebook.detach().cpu().to(torch.float32).numpy()
                shape = tuple(q.mask.shape)
                records.append(QuantizedTensor(plain, shape, positions, indices, codebook, bits))
                continue
            effective = getattr(module, tname).detach().cpu()
            shape = tuple(effective.shape)
            if all(isinstance(p, PruningMask) for p in plist):
                mask = np.logical_and.reduce(
                    [p.mask.detach().cpu().numpy().reshape(-1) for p in plist]
                )
                positions = np.flatnonzero(mask)
                bits = _gap_bits_for(gap_bits, mod_name, module, positions, coder)
                values = effective.to(torch.float32).numpy().reshape(-1)[positions]
                records.append(SparseTensor(plain, shape, positions, values, bits))
            else:  # an unknown parametrization: store what it computes
                records.append(DenseTensor(plain, effective.numpy()))
    return records


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The effective tensors of ``model`` by plain name (what decoding should give back)."""
    modules = dict(model.named_modules())
    out = {}
    with torch.no_grad():
        for plain, (mod_name, tname) in _plain_names(model).items():
            module = modules[mod_name]
            if parametrize.is_parametrized(module, tname):
                out[plain] = getattr(module, tname).detach().cpu().clone()
            else:
                out[plain] = getattr(module, tname).detach().cpu().clone()
    return out


@dataclass(frozen=True)
class EncodeReport:
    """What :func:`encode_model` wrote.

    ``original_bytes`` is every tensor of the plain state dict as float32 (weights and
    biases: the paper's "size before"); ``rate = original_bytes / file_bytes``.
    """

    path: Path
    file_bytes: int
    header_bytes: int
    original_bytes: int
    coder: str
    seconds: float
    tensors: list[TensorStats]

    @property
    def rate(self) -> float:
        return self.original_bytes / self.file_bytes


def encode_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    metadata: dict[str, Any],
    gap_bits: GapBits = None,
    coder: str = "huffman",
    chunk: int = DEFAULT_CHUNK,
    verify: bool = True,
) -> EncodeReport:
    """Write ``model`` to a ``.dcz`` file and report where the bytes went.

    Args:
        model: a pruned and/or quantized model (parametrizations on the module).
        path: the ``.dcz`` file to write.
        metadata: stored in the file; should hold ``model`` (``{"name", "kwargs"}``) so
            :func:`load_dcz` can rebuild a built-in, plus ``dataset``, ``preprocessing``
            and the accuracy measured now.
        gap_bits: see :func:`model_tensors`.
        coder: ``"huffman"`` (default, the paper), ``"ans"``, ``"fixed"`` or ``"best"``.
        chunk: symbols per Huffman chunk.
        verify: decode the written file and check it reproduces every tensor exactly.

    Raises:
        ConfigError: bad settings.
    """
    t0 = time.perf_counter()
    records = model_tensors(model, gap_bits, coder)
    size = write_dcz(path, records, metadata, coder=coder, chunk=chunk)
    seconds = time.perf_counter() - t0
    del records  # the model's indices and positions: as large as the layers' masks
    f = open_dcz(path)
    if verify:
        # One tensor at a time, each decoded record against the model's effective tensor
        # (decoding everything and cloning every tensor first took 3.4x-3.8x the dense
        # model on VGG-16, on top of the model; this takes about 1x).
        modules = dict(model.named_modules())
        names = _plain_names(model)
        decoded = f.records()
        if [r.name for r in decoded] != list(names):
            raise AssertionError(f"{path}: the file's tensors are not the model's")
        with torch.no_grad():
            for record in decoded:
                mod_name, tname = names[record.name]
                module = modules[mod_name]
                last = (
                    module.parametrizations[tname][-1]
                    if parametrize.is_parametrized(module, tname)
                    else None
                )
                if isinstance(last, QuantizedWeight) and isinstance(record, QuantizedTensor):
                    # Checked at the kept positions only: building the effective weight
                    # (float values plus a widened index copy) cost 1.5x the dense VGG-16.
                    if not _quantized_decodes_to(record, last):
                        raise AssertionError(
                            f"{path}: {record.name} does not decode to the model's tensor"
                        )
                    continue
                expected = getattr(module, tname).detach().cpu().numpy()
                if not _decodes_to(record, expected):
                    raise AssertionError(
                        f"{path}: {record.name} does not decode to the model's tensor"
                    )
                del expected
    original = 4 * sum(t.numel for t in f.tensors)
    return EncodeReport(Path(path), size, f.header_bytes, original, coder, seconds, f.stats())


def _decodes_to(record: Tensor, expected: np.ndarray) -> bool:
    """Whether ``to_dense(record)`` equals ``expected`` exactly, without building it.

    Equality of values, so ``+0.0 == -0.0`` (the file stores pruned zeros as +0.0 while
    ``original * mask`` may give -0.0). A sparse or quantized record is its values at its
    positions and zeros elsewhere: it equals ``expected`` when ``expected`` holds those
    values at those positions and no other non-zero.
    """
    if isinstance(record, DenseTensor):
        return record.array.shape == expected.shape and np.array_equal(record.array, expected)
    if tuple(record.shape) != expected.shape:
        return False
    flat = expected.reshape(-1)
    at = flat[record.positions]
    if isinstance(record, SparseTensor):
        values = record.values
    else:
        values = record.codebook[record.indices]
    return np.array_equal(at, values) and np.count_nonzero(flat) == np.count_nonzero(at)


def _quantized_decodes_to(record: QuantizedTensor, q: QuantizedWeight) -> bool:
    """Whether ``record`` decodes to ``q``'s weight ``codebook[indices] * mask`` exactly.

    The same test as :func:`_decodes_to` without the dense weight: the record's positions
    are strictly increasing, so they are the mask's kept set when they are all kept and as
    many; the values there must equal the codebook entries the model's indices select.
    """
    mask = q.mask.detach().cpu().reshape(-1)
    if tuple(record.shape) != tuple(q.mask.shape):
        return False
    if int(torch.count_nonzero(mask)) != record.positions.size:
        return False
    at = torch.from_numpy(np.ascontiguousarray(record.positions, dtype=np.int64))
    if not bool(mask[at].all()):
        return False
    indices = q.indices.detach().cpu().reshape(-1)[at].long()
    want = q.codebook.detach().cpu().to(torch.float32)[indices].numpy()
    return np.array_equal(record.codebook[record.indices], want)


def load_dcz(
    path: str | os.PathLike[str], model: nn.Module | None = None, *, sparse: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """Decode a ``.dcz`` file into a model, in eval mode.

    Args:
        path: the file.
        model: a plain (unparametrized) model to load into; ``None`` rebuilds the built-in
            model named in the file's metadata.
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
    from deep_compression.checkpoint import model_from_metadata

    f = open_dcz(path)
    records, meta = f.records(), f.metadata
    built = model is None
    if built:
        # On the meta device: no memory and no random initialisation for tensors the file
        # then replaces; load_state_dict(assign=True) makes the decoded arrays the
        # parameters instead of copying them in (VGG-16, measured: peak RSS 2.5x -> 1.8x
        # the dense float32 model, load time 1.4 s -> 0.9 s).
        with torch.device("meta"):
            model = model_from_metadata(meta, str(path))
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ConfigError("load_dcz needs a plain model (remove its parametrizations first)")
    swap = _sparse_layer_records(model, records, str(path)) if sparse else {}
    swapped = {f"{name}.weight" for name in swap}
    state = {r.name: torch.from_numpy(to_dense(r)) for r in records if r.name not in swapped}
    del records  # the swapped layers' positions live on in their CSR arrays only
    try:
        # The swapped layers' dense weights are deliberately not loaded; any other
        # missing or unexpected key is still an error, as with strict loading.
        missing, unexpected = model.load_state_dict(state, strict=not swap, assign=built)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise FormatError(f"{path}: tensors do not fit the model: {first}") from None
    if swap and (unexpected or set(missing) != swapped):
        extra = sorted(set(missing) - swapped)
        raise FormatError(
            f"{path}: tensors do not fit the model: missing keys {extra}, "
            f"unexpected keys {sorted(unexpected)}"
        )
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
