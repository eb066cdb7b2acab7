"""Checkpoints without pickle: a safetensors file plus JSON metadata; I/O only.

The state dict (including pruning masks and codebooks, which live on the model as
parametrizations) is stored as safetensors tensors. The metadata
(:class:`~deep_compression.records.CheckpointMeta`: model, dataset and preprocessing,
error, seed, what each phase did) is one JSON string under the safetensors metadata key
``"deep_compression"``. Loading never executes code from the file: safetensors parses a
bounded JSON header and raw buffers.

Checkpoints published by others are read too (:func:`read_state`): PyTorch files through
``torch.load(weights_only=True)`` (tensors and plain containers, never arbitrary objects),
and sharded checkpoints through their index (:mod:`~deep_compression.checkpoint.sharded`).
Fitting their tensors to a model (wrapper prefixes, BatchNorm counters, half precision) is
:mod:`~deep_compression.checkpoint.fit`.

Rebuilding a model from a checkpoint (which needs the models and the stages'
parametrizations) is :func:`deep_compression.loading.load_model`; this package knows
nothing of them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from deep_compression import __version__
from deep_compression.checkpoint.sharded import INDEX_SUFFIX, is_index, read_sharded
from deep_compression.errors import FormatError
from deep_compression.fileio import atomic_path
from deep_compression.records import CheckpointMeta

__all__ = [
    "save_checkpoint",
    "save_state",
    "load_checkpoint",
    "load_safetensors",
    "read_meta",
    "read_state",
    "TORCH_SUFFIXES",
    "INDEX_SUFFIX",
    "METADATA_KEY",
]

METADATA_KEY = "deep_compression"
_MAX_METADATA_BYTES = 1 << 20


def save_state(
    path: str | os.PathLike[str],
    state: Mapping[str, torch.Tensor],
    meta: CheckpointMeta | Mapping[str, Any],
) -> Path:
    """Write ``state`` (name -> tensor) and ``meta`` to ``path`` atomically.

    ``meta`` may be a :class:`CheckpointMeta` or its dict (validated the same way).

    The file appears under its final name only once complete (written to a temporary
    name in the same directory, then renamed); on failure nothing is left behind.
    Parent directories are created.
    """
    # safetensors refuses shared or non-contiguous storage; clone into plain tensors.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    if not isinstance(meta, CheckpointMeta):
        meta = CheckpointMeta.from_dict(meta)
    meta = replace(meta, tool_version=__version__)  # the version that wrote the file
    text = json.dumps(meta.to_dict(), sort_keys=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: text})
    return Path(path)


def save_checkpoint(
    path: str | os.PathLike[str], model: nn.Module, meta: CheckpointMeta | Mapping[str, Any]
) -> Path:
    """Write ``model.state_dict()`` (masks and codebooks included) and ``meta`` to ``path``."""
    return save_state(path, model.state_dict(), meta)


def _raw_meta(path: Path) -> str | None:
    """The JSON text under :data:`METADATA_KEY` of a safetensors file (None: absent),
    read from its bounded header alone."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError, ValueError) as e:
        raise FormatError(f"{path}: not a valid safetensors checkpoint ({e})") from None
    if raw is not None and len(raw) > _MAX_METADATA_BYTES:
        raise FormatError(f"{path}: metadata larger than {_MAX_METADATA_BYTES} bytes")
    return raw


def _parse_meta(raw: str, path: Path) -> CheckpointMeta:
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}: metadata is not JSON ({e})") from None
    return CheckpointMeta.from_dict(meta, str(path))


def read_meta(path: str | os.PathLike[str]) -> CheckpointMeta | None:
    """A checkpoint's metadata without reading its tensors: this project's safetensors
    give theirs, plain state dicts (safetensors without it, PyTorch files, shard indexes)
    None.

    Raises:
        FormatError: missing file, unknown type, or a malformed header.
    """
    path = Path(path)
    if path.is_dir():
        # A directory may hold two indexes (safetensors and .bin) of the same weights:
        # which one to read is the user's choice, so it is asked for, not guessed.
        found = sorted(p.name for p in path.glob(f"*{INDEX_SUFFIX}"))
        hint = f": pass its {' or '.join(found)}" if found else ""
        raise FormatError(f"{path}: is a directory, not a checkpoint file{hint}")
    if not path.is_file():
        raise FormatError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        raw = _raw_meta(path)
        return None if raw is None else _parse_meta(raw, path)
    if path.suffix in TORCH_SUFFIXES or is_index(path):
        return None
    raise FormatError(
        f"{path}: unknown checkpoint type {path.suffix!r} (expected .safetensors, "
        f"{', '.join(TORCH_SUFFIXES)} or a shard index *{INDEX_SUFFIX})"
    )


def load_checkpoint(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Returns:
        ``(state_dict, metadata)``.

    Raises:
        FormatError: missing, unreadable, not safetensors, or without valid metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such checkpoint file")
    raw = _raw_meta(path)
    if raw is None:
        raise FormatError(
            f"{path}: no {METADATA_KEY!r} metadata; not a deep-compression checkpoint"
        )
    meta = _parse_meta(raw, path)
    return load_safetensors(path), meta


def load_safetensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of any safetensors file (metadata or not).

    Raises:
        FormatError: missing, unreadable or not safetensors.
    """
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise FormatError(f"{path}: not a valid safetensors file ({e})") from None


# Checkpoint suffixes read with torch.load(weights_only=True): tensors and plain
# containers only, never arbitrary pickled objects.
TORCH_SUFFIXES = (".pt", ".pth", ".th", ".bin", ".ckpt")
# Entries of a training checkpoint that hold the weights, in the order they are tried.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model")


def read_state(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], CheckpointMeta | None]:
    """The tensors of any checkpoint and, if it has them, this project's metadata.

    * this project's safetensors checkpoints (metadata included);
    * plain safetensors state dicts (no metadata);
    * PyTorch files (``.pt/.pth/.th/.bin/.ckpt``), read with ``weights_only=True`` onto
      the CPU (tensors saved on a GPU load too): a state dict, or a training checkpoint
      whose ``state_dict`` (or ``model_state_dict``, ``model``) entry is one, as
      Lightning's ``.ckpt`` and most training scripts write;
    * sharded checkpoints: the index file (``model.safetensors.index.json``,
      ``pytorch_model.bin.index.json``), its shards next to it (see
      :mod:`~deep_compression.checkpoint.sharded`).

    A ``module.`` prefix on every key (``DataParallel``) is stripped; other wrapper
    prefixes need the model to be told apart from its own names
    (:func:`~deep_compression.checkpoint.fit.match_keys`). Entries that are not tensors
    (epoch, best accuracy, hyper-parameters) and those beside the weights (optimizer
    state) are left out.

    Raises:
        FormatError: unreadable, not a checkpoint, or holding no tensors.
    """
    path = Path(path)
    meta = read_meta(path)  # checks the file and its type too
    if is_index(path):
        state = read_sharded(path, _read_tensors, (".safetensors", *TORCH_SUFFIXES))
    else:
        state = _read_tensors(path)
    keys = list(state)
    if keys and all(k.startswith("module.") for k in keys):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state, meta


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of one file: safetensors, or PyTorch by :data:`TORCH_SUFFIXES`."""
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    try:
        # map_location: files saved on a GPU name it as the tensors' device.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds on bad input
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise FormatError(f"{path}: not a PyTorch checkpoint that loads safely ({first})") from None
    return _unwrap(obj, path)


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The weights in what ``torch.load`` returned: the dict itself or its first
    :data:`_NESTED_KEYS` entry holding tensors (so an optimizer's tensors beside the
    weights, as in Lightning's ``optimizer_states``, are never taken for them)."""
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and any(
                isinstance(v, torch.Tensor) for v in inner.values()
            ):
                obj = inner
                break
        tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
        entries = sorted(str(k)[:40] if str(k).isprintable() else repr(k)[:40] for k in obj)
        more = f" and {len(entries) - 5} more" if len(entries) > 5 else ""
        seen = f" (entries: {', '.join(entries[:5])}{more})" if entries else " (empty)"
        raise FormatError(f"{path}: holds no state dict of tensors{seen}")
    raise FormatError(f"{path}: holds no state dict of tensors (a {type(obj).__name__})")
