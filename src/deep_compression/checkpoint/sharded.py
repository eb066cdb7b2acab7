"""Sharded checkpoints: an index file naming, for every tensor, the file that holds it.

This is the layout Hugging Face writes for large models::

    model.safetensors.index.json            {"metadata": {"total_size": ...},
    model-00001-of-00002.safetensors         "weight_map": {"conv1.weight":
    model-00002-of-00002.safetensors             "model-00001-of-00002.safetensors", ...}}

(``pytorch_model.bin.index.json`` with ``.bin`` shards is the same with PyTorch files). The
user passes the index file itself: a directory often holds both kinds of index, so naming
the directory would be ambiguous.

The index is untrusted input and is validated before any shard is opened: bounded size,
JSON with no key named twice, and every shard a plain file name in the index's own
directory (no path separators, no ``..``, not absolute), so an index can never make the
reader open a file elsewhere. Every key is taken from the shard the map names.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import torch

from deep_compression.errors import FormatError

__all__ = ["INDEX_SUFFIX", "MAX_INDEX_BYTES", "is_index", "read_index", "read_sharded"]

INDEX_SUFFIX = ".index.json"
# Far above any real index (a 70B-parameter model's is about 100 KB), small enough to read
# into memory without a second thought.
MAX_INDEX_BYTES = 16 << 20


def is_index(path: Path) -> bool:
    """Whether ``path`` names a shard index (``*.index.json``)."""
    return path.name.endswith(INDEX_SUFFIX)


def _shown(text: object) -> str:
    """``text`` for an error message: names come from the file, so they are quoted when
    not printable (a newline would break the one-line error) and cut to a bounded length."""
    shown = text if isinstance(text, str) and text.isprintable() else repr(text)
    return shown if len(shown) <= 100 else shown[:97] + "..."


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads would silently keep the last of two equal keys: a tensor mapped to two
    # shards is ambiguous, so it is refused instead.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"{_shown(repr(key))} is named twice")
        out[key] = value
    return out


def _check_shard_name(name: object, index: Path, suffixes: Collection[str]) -> str:
    """``name`` if it is a plain file name with an allowed suffix, else a FormatError."""
    plain = (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
        and not Path(name).is_absolute()
    )
    if not plain:
        raise FormatError(
            f"{index}: shard {_shown(repr(name))} is not a plain file name in the index's directory"
        )
    assert isinstance(name, str)
    if Path(name).suffix not in suffixes:
        raise FormatError(
            f"{index}: shard {_shown(repr(name))} is not one of {', '.join(sorted(suffixes))}"
        )
    return name


def read_index(index: Path, suffixes: Collection[str]) -> dict[str, str]:
    """The validated ``weight_map`` of a shard index: tensor name -> shard file name.

    Args:
        index: the ``*.index.json`` file.
        suffixes: the shard file types allowed (``.safetensors``, ``.bin``, ...).

    Raises:
        FormatError: too large, not JSON, no ``weight_map`` of names to shard names, or a
            shard that is not a plain file name with an allowed suffix.
    """
    try:
        with index.open("rb") as f:
            raw = f.read(MAX_INDEX_BYTES + 1)  # bounded: one byte more tells it is too large
    except OSError as e:
        raise FormatError(f"{index}: cannot read the shard index ({e.strerror or e})") from None
    if len(raw) > MAX_INDEX_BYTES:
        raise FormatError(f"{index}: a shard index larger than {MAX_INDEX_BYTES:,} bytes")
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, a key named twice
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FormatError(f"{index}: not a valid JSON shard index ({first[:200]})") from None
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise FormatError(f'{index}: no "weight_map" of tensor names to shard files')
    return {str(key): _check_shard_name(name, index, suffixes) for key, name in weight_map.items()}


def read_sharded(
    index: Path,
    read_shard: Callable[[Path], Mapping[str, torch.Tensor]],
    suffixes: Collection[str],
) -> dict[str, torch.Tensor]:
    """The tensors a shard index names, each from the shard the index says.

    Args:
        index: the ``*.index.json`` file.
        read_shard: reads one shard file (its type checked by ``suffixes`` first) into
            name -> tensor; it raises FormatError on a bad file.
        suffixes: the shard file types allowed.

    Tensors a shard holds that the index does not name are left out (the index decides).

    Raises:
        FormatError: a bad index (see :func:`read_index`), a missing or unreadable shard,
            or a key not in the shard the index names.
    """
    weight_map = read_index(index, suffixes)
    by_shard: dict[str, list[str]] = {}
    for key, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(key)
    state: dict[str, torch.Tensor] = {}
    for shard, keys in sorted(by_shard.items()):
        file = index.parent / shard
        if not file.is_file():
            raise FormatError(f"{index}: shard {shard} (holding {_shown(keys[0])}) is missing")
        tensors = read_shard(file)
        absent = [k for k in keys if k not in tensors]
        if absent:
            more = f" and {len(absent) - 1} more" if len(absent) > 1 else ""
            raise FormatError(
                f"{index}: {_shown(absent[0])}{more} not in {shard}, which the index names"
            )
        state.update((k, tensors[k]) for k in keys)
        del tensors  # the next shard is read only once this one's extra tensors are freed
    return state
