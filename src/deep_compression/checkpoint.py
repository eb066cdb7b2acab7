"""Checkpoints without pickle: a safetensors file plus JSON metadata.

The state dict (including pruning masks and codebooks, which live on the model as
parametrizations) is stored as safetensors tensors. The metadata (model name and
arguments, dataset and preprocessing, accuracy, seed, training config, pipeline stage)
is one JSON string under the safetensors metadata key ``"deep_compression"``. Loading
never executes code from the file: safetensors parses a bounded JSON header and raw
buffers.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from deep_compression import __version__
from deep_compression.errors import FormatError
from deep_compression.models import build_model

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "model_from_metadata",
    "restore_parametrizations",
    "METADATA_KEY",
]

METADATA_KEY = "deep_compression"
_MAX_METADATA_BYTES = 1 << 20


def save_checkpoint(
    path: str | os.PathLike[str], model: nn.Module, metadata: dict[str, Any]
) -> Path:
    """Write ``model.state_dict()`` and ``metadata`` to ``path`` (a ``.safetensors`` file).

    ``metadata`` must be JSON-serialisable and should hold at least ``model``
    (``{"name": ..., "kwargs": {...}}``) so :func:`load_model` can rebuild the network.
    The tool version is added. Parent directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # safetensors refuses shared or non-contiguous storage; clone into plain tensors.
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"tool_version": __version__, **metadata}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
    os.replace(tmp, path)  # never leave a half-written checkpoint under the final name
    return path


def load_checkpoint(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Returns:
        ``(state_dict, metadata)``.

    Raises:
        FormatError: missing, unreadable, not safetensors, or without valid metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such checkpoint file")
    try:
        state = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError, ValueError) as e:
        raise FormatError(f"{path}: not a valid safetensors checkpoint ({e})") from None
    if raw is None:
        raise FormatError(
            f"{path}: no {METADATA_KEY!r} metadata; not a deep-compression checkpoint"
        )
    if len(raw) > _MAX_METADATA_BYTES:
        raise FormatError(f"{path}: metadata larger than {_MAX_METADATA_BYTES} bytes")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}: metadata is not JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
        raise FormatError(f"{path}: metadata lacks the model description")
    return state, meta


def model_from_metadata(meta: dict[str, Any], where: str = "checkpoint") -> nn.Module:
    """Build the (untrained) built-in model a metadata dict describes."""
    desc = meta.get("model")
    if not isinstance(desc, dict) or not isinstance(desc.get("name"), str):
        raise FormatError(f"{where}: metadata lacks model.name")
    kwargs = desc.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise FormatError(f"{where}: model.kwargs must be a JSON object")
    return build_model(desc["name"], **kwargs)


_PARAM_KEY = re.compile(r"^(?:(.*)\.)?parametrizations\.(\w+)\.(original|0\.(\w+))$")


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
    from torch.nn.utils import parametrize

    from deep_compression.prune import PruningMask
    from deep_compression.quantize import QuantizedWeight

    groups: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = _PARAM_KEY.match(key)
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


def load_model(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint and load its weights.

    Returns:
        ``(model, metadata)`` with the model in eval mode.

    Raises:
        FormatError: bad file, or the tensors do not fit the described model.
    """
    state, meta = load_checkpoint(path)
    model = model_from_metadata(meta, str(path))
    restore_parametrizations(model, state, str(path))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        name = meta["model"]["name"]
        raise FormatError(f"{path}: weights do not fit {name}: {first[0]}") from None
    model.eval()
    return model, meta
