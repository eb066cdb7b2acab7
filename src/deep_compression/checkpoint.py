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
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from deep_compression import __version__
from deep_compression.errors import FormatError
from deep_compression.models import build_model

__all__ = ["save_checkpoint", "load_checkpoint", "load_model", "METADATA_KEY"]

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


def load_model(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint and load its weights.

    Returns:
        ``(model, metadata)`` with the model in eval mode.

    Raises:
        FormatError: bad file, or the tensors do not fit the described model.
    """
    state, meta = load_checkpoint(path)
    model = model_from_metadata(meta, str(path))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        name = meta["model"]["name"]
        raise FormatError(f"{path}: weights do not fit {name}: {first[0]}") from None
    model.eval()
    return model, meta
