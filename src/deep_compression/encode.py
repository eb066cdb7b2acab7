"""The torch side of the compressed file: model -> ``.dcz``.

:func:`encode_model` reads each tensor of a (pruned and/or quantized) model in its plain
state-dict name (``fc1.weight``, what ``strip_*`` would leave) and writes it as

* ``quantized`` when a :class:`~deep_compression.quantize.QuantizedWeight` determines it
  (``weight = codebook[indices] * mask``);
* ``sparse`` when only :class:`~deep_compression.prune.PruningMask` parametrizations
  apply (``weight = original * mask``);
* ``dense`` otherwise (biases, unpruned layers, buffers).

How it writes them is an :class:`~deep_compression.encode_config.EncodeConfig` (the
``[encode]`` table of a recipe; default: the smallest coding, ``coder="best"`` with
every gap width ``"auto"``).
The way back, ``.dcz`` -> model, is :func:`deep_compression.loading.load_dcz`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from deep_compression.dcz import (
    CODER_CHOICES,
    DczFile,
    DenseTensor,
    QuantizedTensor,
    SparseTensor,
    Tensor,
    TensorStats,
    open_dcz,
    to_bytes,
    write_dcz,
)
from deep_compression.dcz.lossless import record_from_array
from deep_compression.encode_config import (
    DEFAULT_CODER,
    DEFAULT_GAP_BITS,
    EncodeConfig,
    GapBits,
    layer_gap_bits,
    order0_coder,
    plain_gap_bits,
)
from deep_compression.errors import ConfigError
from deep_compression.fileio import atomic_write
from deep_compression.layer_config import check_patterns
from deep_compression.prune import PruningMask
from deep_compression.quantize import QuantizedWeight
from deep_compression.records import CheckpointMeta, ModelSpec

__all__ = [
    "DEFAULT_GAP_BITS",
    "EncodeConfig",
    "EncodeReport",
    "model_tensors",
    "plain_state_dict",
    "encode_model",
    "encode_to_bytes",
    "file_metadata",
    "read_report",
]

_PARAM_KEY = re.compile(r"^(?:(.*)\.)?parametrizations\.(\w+)\.(?:original|\d+\..+)$")


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


def model_tensors(
    model: nn.Module, gap_bits: GapBits = None, coder: str = DEFAULT_CODER
) -> list[Tensor]:
    """The model's tensors as ``.dcz`` records, by plain state-dict name, in order.

    Args:
        model: any ``nn.Module``; parametrized layers are read through their
            parametrizations.
        gap_bits: gap field width: ``None`` for the coder's default (``"auto"`` under
            ``"best"``; the paper's 5 for ``Linear`` and 8 for ``ConvNd`` under a named
            coder), an int for every layer, ``"auto"`` (per layer, the width that makes
            the gap stream smallest under ``coder``), or a per-layer mapping of those
            such as ``{"*": 5, "type:Conv*": 8, "fc1": "auto"}`` (keys as in
            :mod:`deep_compression.layer_config`; layers not matched keep the default).
            It applies to plain weights whose zeros and few values are found too; a
            plain weight no key matches gets "auto" under any coder.
        coder: the coder the file will use (only the gap widths depend on it).

    Raises:
        ConfigError: a ``gap_bits`` key that matches no layer with a weight.
    """
    if coder not in CODER_CHOICES:
        raise ConfigError(f"coder must be one of {', '.join(CODER_CHOICES)}, got {coder!r}")
    modules = dict(model.named_modules())
    names = _plain_names(model)
    # Layers whose tensors may be stored sparse: pruned ones and any plain weight.
    coded = {m: modules[m] for m, t in names.values()
             if t == "weight" or parametrize.is_parametrized(modules[m], t)}  # fmt: skip
    if isinstance(gap_bits, Mapping):
        check_patterns(gap_bits, coded, "gap_bits")
    records: list[Tensor] = []
    with torch.no_grad():
        for plain, (mod_name, tname) in names.items():
            module = modules[mod_name]
            if not parametrize.is_parametrized(module, tname):
                value = getattr(module, tname).detach().cpu().numpy()
                if tname == "weight":
                    # A plain weight that is already sparse or few-valued (a decoded .dcz)
                    # is stored as such, bit for bit; otherwise it stays dense.
                    bits = plain_gap_bits(gap_bits, mod_name, module)
                    records.append(record_from_array(plain, value, bits, order0_coder(coder)))
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
                bits = layer_gap_bits(gap_bits, mod_name, module, positions, coder)
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
                bits = layer_gap_bits(gap_bits, mod_name, module, positions, coder)
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
            out[plain] = getattr(module, tname).detach().cpu().clone()
    return out


@dataclass(frozen=True)
class EncodeReport:
    """What :func:`encode_model` wrote.

    ``original_bytes`` is every floating-point tensor of the plain state dict as float32
    (weights, biases, BatchNorm statistics: the paper's "size before"; integer buffers
    count 0); ``rate = original_bytes / file_bytes``.
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


def default_metadata(model: nn.Module) -> CheckpointMeta:
    """Metadata for a model encoded without any: its class as a ``module:name`` spec.

    :func:`~deep_compression.loading.load_dcz` never imports that on its own; pass the
    model to load into.
    """
    cls = type(model)
    return CheckpointMeta(model=ModelSpec(f"{cls.__module__}:{cls.__qualname__}"))


def file_metadata(
    model: nn.Module, metadata: CheckpointMeta | Mapping[str, Any] | None
) -> CheckpointMeta:
    """The metadata a file of ``model`` carries: ``metadata`` validated, or the default."""
    if metadata is None:
        return default_metadata(model)
    if isinstance(metadata, CheckpointMeta):
        return metadata
    return CheckpointMeta.from_dict(metadata, "metadata")


def encode_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    config: EncodeConfig | None = None,
    *,
    metadata: CheckpointMeta | Mapping[str, Any] | None = None,
    verify: bool = True,
) -> EncodeReport:
    """Write ``model`` to a ``.dcz`` file and report where the bytes went.

    Args:
        model: a pruned and/or quantized model (parametrizations on the module), or any
            plain model (its tensors are stored dense).
        path: the ``.dcz`` file to write (atomically: complete or not at all).
        config: coder, gap widths, chunk (default :class:`EncodeConfig`).
        metadata: stored in the file; a :class:`~deep_compression.records.CheckpointMeta`
            (or its dict) whose ``model`` lets :func:`~deep_compression.loading.load_dcz`
            rebuild a built-in, plus ``dataset``, ``preprocessing`` and the error
            measured now. Default: :func:`default_metadata`.
        verify: decode the written file and check it reproduces every tensor exactly.

    Raises:
        ConfigError: bad settings.
    """
    config = config or EncodeConfig()
    metadata = file_metadata(model, metadata)
    coder, chunk, gap_bits = config.coder, config.chunk, dict(config.gap_bits) or None
    t0 = time.perf_counter()
    records = model_tensors(model, gap_bits, coder)
    write_dcz(path, records, metadata.to_dict(), coder=coder, chunk=chunk)
    seconds = time.perf_counter() - t0
    del records  # the model's indices and positions: as large as the layers' masks
    if verify:
        _verify(model, open_dcz(path), path)
    return read_report(path, coder, seconds)


def encode_to_bytes(
    model: nn.Module,
    path: str | os.PathLike[str],
    config: EncodeConfig | None = None,
    *,
    metadata: CheckpointMeta | Mapping[str, Any] | None = None,
) -> tuple[DczFile, EncodeReport]:
    """:func:`encode_model`, with the file checked from the bytes written: encoded in
    memory, opened and verified against ``model`` (every tensor, exactly), then written
    to ``path`` atomically. Returns the opened file (its records, stages and summary need
    no second read) and the report."""
    config = config or EncodeConfig()
    metadata = file_metadata(model, metadata)
    coder, gap_bits = config.coder, dict(config.gap_bits) or None
    t0 = time.perf_counter()
    records = model_tensors(model, gap_bits, coder)
    blob = to_bytes(records, metadata.to_dict(), coder=coder, chunk=config.chunk)
    seconds = time.perf_counter() - t0
    del records
    f = open_dcz(blob)
    _verify(model, f, path)
    atomic_write(path, blob)
    report = EncodeReport(
        Path(path), f.size, f.header_bytes, f.original_bytes, coder, seconds, f.stats()
    )
    return f, report


def read_report(path: str | os.PathLike[str], coder: str, seconds: float = 0.0) -> EncodeReport:
    """The :class:`EncodeReport` of a written file (what another rank reads back)."""
    f = open_dcz(path)
    return EncodeReport(
        Path(path), f.size, f.header_bytes, f.original_bytes, coder, seconds, f.stats()
    )


def _verify(model: nn.Module, f: DczFile, path: str | os.PathLike[str]) -> None:
    """Check every tensor of the written file ``f`` decodes to the model's, exactly.

    One tensor at a time, each decoded record against the model's effective tensor
    (decoding everything and cloning every tensor first took 3.4x-3.8x the dense model on
    VGG-16, on top of the model; this takes about 1x).
    """
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
                ok = _quantized_decodes_to(record, last)
            else:
                ok = _decodes_to(record, getattr(module, tname).detach().cpu().numpy())
            if not ok:
                raise AssertionError(f"{path}: {record.name} does not decode to the model's tensor")


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
