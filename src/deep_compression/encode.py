"""The torch side of the compressed file: model -> ``.dcz`` -> model.

:func:`encode_model` reads each tensor of a (pruned and/or quantized) model in its plain
state-dict name (``fc1.weight``, what ``strip_*`` would leave) and writes it as

* ``quantized`` when a :class:`~deep_compression.quantize.QuantizedWeight` determines it
  (``weight = codebook[indices] * mask``);
* ``sparse`` when only :class:`~deep_compression.prune.PruningMask` parametrizations
  apply (``weight = original * mask``);
* ``dense`` otherwise (biases, unpruned layers, buffers).

:func:`load_dcz` decodes a file (numpy, :func:`deep_compression.dcz.decode`) into a
rebuilt built-in model or into a plain model you pass.
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

from deep_compression.coding.gaps import best_gap_bits
from deep_compression.dcz import (
    CODER_CHOICES,
    DEFAULT_CHUNK,
    DenseTensor,
    QuantizedTensor,
    SparseTensor,
    Tensor,
    TensorStats,
    decode,
    open_dcz,
    write_dcz,
)
from deep_compression.errors import ConfigError, FormatError
from deep_compression.layer_config import check_patterns, resolve
from deep_compression.prune import PruningMask
from deep_compression.quantize import QuantizedWeight

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
                value = getattr(module, tname)
                records.append(DenseTensor(plain, value.detach().cpu().numpy()))
                continue
            plist = list(module.parametrizations[tname])
            effective = getattr(module, tname).detach().cpu()
            shape = tuple(effective.shape)
            if isinstance(plist[-1], QuantizedWeight):
                # The last parametrization ignores its input: the weight is exactly
                # codebook[indices] * mask whatever came before.
                q = plist[-1]
                mask = q.mask.detach().cpu().numpy().reshape(-1)
                positions = np.flatnonzero(mask)
                bits = _gap_bits_for(gap_bits, mod_name, module, positions, coder)
                indices = q.indices.detach().cpu().numpy().reshape(-1)[positions]
                codebook = q.codebook.detach().cpu().to(torch.float32).numpy()
                records.append(QuantizedTensor(plain, shape, positions, indices, codebook, bits))
            elif all(isinstance(p, PruningMask) for p in plist):
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
    f = open_dcz(path)
    if verify:
        decoded = f.decode()
        for name, expected in plain_state_dict(model).items():
            got = decoded[name]
            # Exact equality of values (+0.0 == -0.0: the file stores pruned zeros as +0.0
            # while original * mask may give -0.0).
            if got.shape != tuple(expected.shape) or not np.array_equal(got, expected.numpy()):
                raise AssertionError(f"{path}: {name} does not decode to the model's tensor")
    original = 4 * sum(t.numel for t in f.tensors)
    return EncodeReport(Path(path), size, f.header_bytes, original, coder, seconds, f.stats())


def load_dcz(
    path: str | os.PathLike[str], model: nn.Module | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Decode a ``.dcz`` file into a model, in eval mode.

    Args:
        path: the file.
        model: a plain (unparametrized) model to load into; ``None`` rebuilds the built-in
            model named in the file's metadata.

    Returns:
        ``(model, metadata)``.

    Raises:
        FormatError: bad file, or its tensors do not fit the model.
    """
    from deep_compression.checkpoint import model_from_metadata

    arrays, meta = decode(path)
    if model is None:
        model = model_from_metadata(meta, str(path))
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ConfigError("load_dcz needs a plain model (remove its parametrizations first)")
    state = {k: torch.from_numpy(v) for k, v in arrays.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise FormatError(f"{path}: tensors do not fit the model: {first}") from None
    model.eval()
    return model, meta
