"""Evaluation: :func:`evaluate` (mean loss and accuracy) and :func:`predict` (per-image
correctness and loss, for paired comparisons of models on the same images), on one
process or many.

Kept apart from the training loop (:mod:`.loop`) because searches call these alone, many
times: a budget search evaluates dozens of candidate models on one validation split, and
a sequential test compares a candidate with the dense model image by image, a chunk of
images at a time, stopping as soon as the answer is clear.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset

from deep_compression import distributed as dist
from deep_compression.data import Split
from deep_compression.errors import ConfigError
from deep_compression.train.batches import Data, check_data, make_loader

__all__ = ["PREDICT_BATCH", "Predictions", "evaluate", "logits_of", "model_device", "predict"]

# Images per forward pass of :func:`predict`. ResNet-44 on 5,000 CIFAR-10 images in memory,
# one thread: 309, 226, 163 and 125 images/s at 256, 500, 1,000 and 2,000 (two threads:
# 542, 447, 265, 219), the same logits at every size. Large batches are slow because each
# activation over 32 MB (glibc's largest mmap threshold) is mapped and unmapped afresh, page
# faults included: with MALLOC_MMAP_THRESHOLD_ raised, every size ran at about 305 images/s.
PREDICT_BATCH = 256

# Which images to evaluate: positions in the dataset, in the order wanted.
Indices = range | Sequence[int] | np.ndarray | torch.Tensor


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def logits_of(output: Any) -> torch.Tensor:
    """The ``(B, classes)`` class scores in a model's output.

    A tensor is returned as it is; an object with a ``logits`` attribute (a Hugging Face
    ``ModelOutput``) gives that; a tuple or list (``return_dict=False``, or a model that
    also returns features) gives its first element.

    >>> logits_of((torch.zeros(2, 3), "features")).shape
    torch.Size([2, 3])

    Raises:
        ConfigError: none of these, or a first element / ``logits`` that is not a tensor.
    """
    if isinstance(output, torch.Tensor):
        return output
    found = getattr(output, "logits", None)
    if found is None and isinstance(output, tuple | list) and output:
        found = output[0]
    if not isinstance(found, torch.Tensor):
        raise ConfigError(
            "the model must return class scores: a tensor, a tuple whose first element is "
            f"one, or an object with .logits; got {type(output).__name__}"
        )
    return found


def _batches(
    data: Data, positions: range | np.ndarray, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` batches of the items ``positions`` of ``data``, in that order."""
    if isinstance(data, Split):
        if isinstance(positions, range) and positions.step == 1:
            # Slices of the tensors: no copy, and for evaluate the same batches (and so the
            # same bits) as always.
            stop = positions.stop
            for i in range(positions.start, stop, batch_size):
                j = min(i + batch_size, stop)
                yield data.x[i:j], data.y[i:j]
            return
        order = torch.as_tensor(np.asarray(positions, dtype=np.int64))
        for idx in order.split(batch_size):
            yield data.x[idx], data.y[idx]
        return
    check_data(data, "evaluation data")
    subset = Subset(data, positions if isinstance(positions, range) else positions.tolist())
    yield from make_loader(subset, batch_size=batch_size, shuffle=False)


@torch.inference_mode()
def _evaluate_part(model: nn.Module, data: Data, part: range, batch_size: int) -> tuple[float, int]:
    """Summed cross-entropy and number of correct predictions over items ``part`` of ``data``."""
    dev = model_device(model)
    total_loss, correct = 0.0, 0
    for x, y in _batches(data, part, batch_size):
        x, y = x.to(dev), y.to(dev)
        logits = logits_of(model(x))
        total_loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return total_loss, correct


def evaluate(
    model: nn.Module, data: Data, batch_size: int = 1000, *, shard: bool = True
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``data`` (eval mode).

    Under several ranks each rank evaluates its contiguous share of ``data``
    (:func:`~deep_compression.distributed.shard`) and the sums are added up, so every rank
    returns the accuracy over all of ``data``, exactly (counts are integers) and the loss up
    to float rounding. Every rank must then call it; ``shard=False`` evaluates all of
    ``data`` on this rank alone (for code that runs on rank 0 only).

    Args:
        model: maps ``(B, ...)`` inputs to ``(B, classes)`` logits (or an output
            :func:`logits_of` reads them from).
        data: a :class:`~deep_compression.data.Split` or a map-style Dataset of ``(x, y)``;
            :func:`~deep_compression.data.in_memory` decodes a dataset once for many
            evaluations.
        batch_size: images per forward pass.
        shard: split the work across ranks (a no-op in one process).
    """
    n = len(data)
    part = dist.shard(n) if shard else range(n)
    was_training = model.training
    model.eval()
    try:
        total_loss, correct = _evaluate_part(model, data, part, batch_size)
    finally:
        model.train(was_training)
    if shard:
        total_loss, correct = dist.all_reduce_sum(total_loss, correct, phase="evaluation")
    n = max(1, n)
    return total_loss / n, correct / n


@dataclass(frozen=True)
class Predictions:
    """Per-image results of :func:`predict`, in the order of ``indices``.

    An image's loss can differ in its last bits with the batch it was computed in (matrix
    products round differently for different batch sizes), so compare two models on the
    same ``indices`` and ``batch_size`` when the bits matter.

    Attributes:
        indices: ``(N,)`` int64 positions of the images in the dataset.
        correct: ``(N,)`` bool, whether the top class is the label.
        loss: ``(N,)`` float32 cross-entropy of each image.
    """

    indices: np.ndarray
    correct: np.ndarray
    loss: np.ndarray

    def __len__(self) -> int:
        return int(self.indices.size)

    @property
    def accuracy(self) -> float:
        """Fraction correct: exactly :func:`evaluate`'s accuracy on the same images."""
        return int(np.count_nonzero(self.correct)) / max(1, len(self))

    @property
    def mean_loss(self) -> float:
        """Mean cross-entropy (summed in float64): :func:`evaluate`'s loss to ~1e-7."""
        return float(self.loss.sum(dtype=np.float64)) / max(1, len(self))


def _positions(indices: Indices | None, n: int) -> range | np.ndarray:
    """``indices`` checked against a dataset of ``n`` items: a range or ``(M,)`` int64."""
    if indices is None:
        return range(n)
    if isinstance(indices, range):
        ends = (indices[0], indices[-1]) if len(indices) else (0, 0)
        if len(indices) and not (0 <= min(ends) and max(ends) < n):
            raise ConfigError(f"indices {indices} reach outside the dataset's {n} items")
        return indices
    arr = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices)
    if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
        raise ConfigError(f"indices must be a 1-d sequence of integers, got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ConfigError(f"indices must lie in 0..{n - 1}, got {arr.min()}..{arr.max()}")
    return arr.astype(np.int64)


@torch.inference_mode()
def _predict_part(
    model: nn.Module, data: Data, positions: range | np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(correct (M,) bool, loss (M,) float32)`` of the items ``positions`` of ``data``."""
    dev = model_device(model)
    correct, loss = [], []
    for x, y in _batches(data, positions, batch_size):
        x, y = x.to(dev), y.to(dev)
        logits = logits_of(model(x))
        ce = nn.functional.cross_entropy(logits, y, reduction="none")
        loss.append(ce.float().cpu().numpy())
        correct.append((logits.argmax(1) == y).cpu().numpy())
    if not loss:
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=np.float32)
    return np.concatenate(correct), np.concatenate(loss)


def predict(
    model: nn.Module,
    data: Data,
    batch_size: int = PREDICT_BATCH,
    *,
    indices: Indices | None = None,
    shard: bool = True,
) -> Predictions:
    """Per-image correctness and cross-entropy of ``model`` on ``data`` (eval mode).

    For paired comparisons: two models' :class:`Predictions` on the same images differ
    image by image, which a paired test reads with far less noise than two error rates.
    ``indices`` evaluates only those images, in that order (a chunk of a sequential test:
    ``range(0, 1000)``, then ``range(1000, 2000)``...); on a
    :class:`~deep_compression.data.Split` a range costs no copy. ``predict(...).accuracy``
    equals :func:`evaluate`'s accuracy on the same images exactly, ``mean_loss`` its loss
    to float rounding.

    Under several ranks each rank evaluates its contiguous share of the images and every
    rank receives all of them (one all-reduce of a zero-filled array per rank's share:
    adding zeros is exact, so the values are the evaluating rank's bit for bit). Every rank
    must then call it; ``shard=False`` evaluates everything on this rank alone.

    The default batch, :data:`PREDICT_BATCH`, ran ResNet-44 on CIFAR-10 1.9 times as fast
    as :func:`evaluate`'s 1,000 (one thread), with the same logits.

    Args:
        model: maps ``(B, ...)`` inputs to ``(B, classes)`` logits (see :func:`logits_of`).
        data: a Split or a map-style Dataset of ``(x, y)`` with integer labels.
        batch_size: images per forward pass.
        indices: positions in ``data`` (a range, a sequence, a 1-d array or tensor of
            ints); default all of them.
        shard: split the work across ranks (a no-op in one process).

    Raises:
        ConfigError: bad ``indices`` or ``batch_size``, data that is not a dataset, or a
            model output without class scores.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    positions = _positions(indices, len(data))
    m = len(positions)
    part = dist.shard(m) if shard else range(m)
    was_training = model.training
    model.eval()
    try:
        correct, loss = _predict_part(model, data, positions[part.start : part.stop], batch_size)
    finally:
        model.train(was_training)
    if shard and dist.world_size() > 1:
        both = torch.zeros((2, m), dtype=torch.float64)
        both[0, part.start : part.stop] = torch.from_numpy(correct.astype(np.float64))
        both[1, part.start : part.stop] = torch.from_numpy(loss.astype(np.float64))
        dist.all_reduce_sum_(both, phase="prediction")
        correct, loss = both[0].numpy() != 0, both[1].numpy().astype(np.float32)
    return Predictions(np.asarray(positions, dtype=np.int64), correct, loss)
