"""Decode a dataset once into memory, for code that evaluates many models on the same images.

A budget search evaluates dozens of candidate models on one validation split. An
:class:`~deep_compression.data.ImageFolder` decodes every image with Pillow again for each
of them (and a DataLoader batches the per-image tensors); :func:`in_memory` does that work
once and returns a :class:`~deep_compression.data.Split` of in-memory tensors, which
evaluation slices directly. The tensors are exactly the ones iterating the dataset gives.

Why a tight loop and no worker threads: on CIFAR-10's 10,000 32x32 JPEGs (this machine,
one core) decoding takes 0.2 ms an image, of which Pillow's C decoder is a fifth; the rest
is Pillow's Python header parsing, which holds the GIL, so 2 threads took 3.7 s against
2.1 s for one. The per-image torch normalisation of ``ImageFolder.__getitem__`` cost as
much again (2 s); here it is done on whole chunks of images (0.05 s).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from deep_compression.data.folder import ImageFolder
from deep_compression.data.idx import Split
from deep_compression.errors import ConfigError
from deep_compression.progress import log, progress_bar

__all__ = ["DEFAULT_MAX_BYTES", "MAX_BYTES_LIMIT", "in_memory"]

# 2 GiB: CIFAR-10's whole training set as float32 is 614 MB, ImageNet's 50,000 validation
# images at 224x224 are 30 GB (those stream).
DEFAULT_MAX_BYTES = 2 << 30
# The largest ``max_bytes`` accepted (1 TiB): beyond it a typo, not a plan.
MAX_BYTES_LIMIT = 1 << 40
# Floats normalised per step (4 MB): a chunk of images small enough to stay in cache.
_CHUNK = 1 << 20


def _check_max_bytes(max_bytes: object) -> int:
    is_int = isinstance(max_bytes, int) and not isinstance(max_bytes, bool)
    if not is_int or not 0 <= max_bytes <= MAX_BYTES_LIMIT:  # type: ignore[operator]
        raise ConfigError(
            f"max_bytes must be an integer in 0..{MAX_BYTES_LIMIT}, got {max_bytes!r}"
        )
    return int(max_bytes)  # type: ignore[call-overload]


def _folder_of(data: Any) -> tuple[ImageFolder, list[int]] | None:
    """``(folder, indices)`` when ``data`` is an ImageFolder or (nested) Subsets of one:
    the fast path, which normalises all images at once."""
    indices: list[int] | None = None
    while isinstance(data, Subset):
        picked = [int(i) for i in data.indices]
        indices = picked if indices is None else [picked[i] for i in indices]
        data = data.dataset
    if not isinstance(data, ImageFolder):
        return None
    return data, list(range(len(data))) if indices is None else indices


def in_memory(
    data: Split | Dataset, *, max_bytes: int = DEFAULT_MAX_BYTES, progress: bool = False
) -> Split | Dataset:
    """``data`` decoded and normalised once into a :class:`Split`, if it fits.

    ``Split(x, y)`` holds exactly the tensors ``data[i]`` gives, stacked as a DataLoader
    stacks them: ``x`` is ``(N, *item_shape)`` in the items' dtype (float32
    ``(N, C, H, W)`` for images), ``y`` is ``(N,)`` int64 for integer labels. A Split is
    returned as it is. When ``x`` and ``y`` would take more than ``max_bytes``, ``data``
    is returned unchanged (it keeps streaming) and a log line says so:
    ``isinstance(result, Split)`` tells which happened. Under several ranks every rank
    holds its own copy.

    Args:
        data: a Split, or a map-style dataset of ``(x, y)`` (an ImageFolder, a Subset of
            one, anything indexable with a length).
        max_bytes: the most memory the tensors may take (0..:data:`MAX_BYTES_LIMIT`).
        progress: a progress bar (or log lines) while decoding.

    Raises:
        ConfigError: a bad ``max_bytes``, or items whose shapes differ.
        DataError: an unreadable image (from the dataset).
    """
    limit = _check_max_bytes(max_bytes)
    if isinstance(data, Split):
        return data
    n = len(data)  # type: ignore[arg-type]
    folder = _folder_of(data)
    if folder is not None:
        f, _ = folder
        need = n * (f.channels * f.shape[0] * f.shape[1] * 4 + 8)  # float32 x, int64 y
    else:
        first = [torch.as_tensor(v) for v in data[0]] if n else []
        need = n * sum(t.numel() * t.element_size() for t in first)
    if need > limit:
        log(
            f"{n:,} items need {need / 2**20:,.0f} MiB in memory, over max_bytes = "
            f"{limit / 2**20:,.0f} MiB: they stream from the dataset"
        )
        return data
    if folder is not None:
        return _decode_folder(*folder, progress)
    return _stack(data, n, progress)


def _decode_folder(folder: ImageFolder, indices: Sequence[int], progress: bool) -> Split:
    """``folder``'s images ``indices``, decoded into one uint8 array, then normalised
    a chunk at a time with the very operations of ``ImageFolder.__getitem__``."""
    n, c = len(indices), folder.channels
    h, w = folder.shape
    pixels = np.empty((n, h, w, c), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    bar = progress_bar(enumerate(indices), desc="decode", total=n, enabled=progress, unit="image")
    for k, i in bar:
        pixels[k] = folder.pixels(i)
        labels[k] = folder.samples[i][1]
    bar.close()
    x = torch.empty((n, c, h, w), dtype=torch.float32)
    step = max(1, _CHUNK // (c * h * w))
    for s in range(0, n, step):
        # Element by element the float32 operations of ``__getitem__``: the same bits. In
        # place on a contiguous chunk that stays in cache: 0.05 s for CIFAR-10's test set,
        # against 0.4 s for the same expression on the whole (permuted) array.
        part = torch.from_numpy(pixels[s : s + step]).permute(0, 3, 1, 2).contiguous().float()
        part /= 255.0
        part -= folder.mean
        part /= folder.std
        x[s : s + step] = part
    return Split(x, torch.from_numpy(labels))


def _stack(data: Dataset, n: int, progress: bool) -> Split:
    """Every item of ``data`` copied into preallocated tensors ``x`` ``(n, *x_shape)`` and
    ``y`` ``(n, *y_shape)`` (``(n,)`` int64 for integer labels), as a DataLoader's
    collation would stack them."""
    if n == 0:
        return Split(torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    out: list[torch.Tensor] = []
    bar = progress_bar(range(n), desc="load", total=n, enabled=progress, unit="item")
    for i in bar:
        item = [torch.as_tensor(v) for v in data[i]]
        if not out:
            out = [torch.empty((n, *t.shape), dtype=t.dtype) for t in item]
        for t, buf in zip(item, out, strict=True):
            if t.shape != buf.shape[1:]:
                raise ConfigError(
                    f"item {i} has shape {tuple(t.shape)}, item 0 "
                    f"{tuple(buf.shape[1:])}: cannot stack them"
                )
            buf[i] = t
    bar.close()
    return Split(out[0], out[1])
