"""Batches for training and evaluation: which images each rank takes at each step
(:class:`GlobalBatchSampler`) and how they are drawn from a Split or a Dataset.

Kept apart from the loop (:mod:`.loop`) because the order of the draws
is what makes runs reproducible: the permutation of an epoch is drawn when its first batch
is requested, and a DataLoader gets a generator of its own so it never draws from torch's
global one (which dropout uses).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from deep_compression.data import Split
from deep_compression.errors import ConfigError

__all__ = ["Data", "GlobalBatchSampler", "check_data", "epoch_batches", "make_loader"]

# What fit and evaluate accept: a Split of in-memory tensors, or any map-style torch
# Dataset whose items are ``(x, y)`` pairs (x an image tensor, y an integer label).
Data = Split | Dataset


def check_data(data: Data, what: str) -> None:
    """Raise :class:`ConfigError` naming ``what`` unless ``data`` is a :data:`Data`."""
    if isinstance(data, Split) or (isinstance(data, Dataset) and hasattr(data, "__len__")):
        return
    raise ConfigError(
        f"{what} must be a data.Split or a map-style torch Dataset of (x, y) pairs with a "
        f"length, got {type(data).__name__}"
    )


class GlobalBatchSampler(Sampler[list[int]]):
    """This rank's part of every global batch of an epoch (a distributed batch sampler).

    Each epoch every rank draws the same permutation of ``range(n)`` from ``generator``
    (seeded alike on every rank), cuts it into global batches of ``batch_size`` (the last
    one shorter when ``n`` is not a multiple), and takes its contiguous share of each batch:
    images ``[r * b // N, (r + 1) * b // N)`` of a batch of ``b``. The ranks' parts of a
    step are therefore exactly the batch a single process takes at that step, for any
    ``n``, ``batch_size`` and ``N``, with no image dropped or repeated (torch's
    ``DistributedSampler`` shards the epoch instead, and pads it with repeated images when
    ``n`` is not a multiple of ``N``, so its steps are not a single process's batches).

    With one rank it yields ``randperm(n)`` in consecutive batches, the order the loop has
    always used, so single-process results are unchanged. The permutation of epoch ``e`` is
    the ``e``-th draw from the generator; :meth:`set_epoch` checks that epochs come in order.

    Args:
        n: dataset length.
        batch_size: global batch size.
        generator: the shuffling generator (same seed and same use on every rank).
        rank, world_size: this rank and the number of ranks.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        generator: torch.Generator,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if n < 0 or batch_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad sampler arguments n={n} batch_size={batch_size} {rank=}")
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Declare the epoch about to be iterated (1, 2, 3... in order)."""
        if epoch != self.epoch + 1:
            raise ValueError(f"epochs must come in order: got {epoch} after {self.epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        """Steps per epoch (the same on every rank)."""
        return math.ceil(self.n / self.batch_size)

    def global_size(self, step: int) -> int:
        """Images in global batch ``step`` (0-based) of an epoch, over all ranks."""
        return min(self.batch_size, self.n - step * self.batch_size)

    def index_batches(self) -> Iterator[torch.Tensor]:
        """This rank's batches as int64 index tensors (what :meth:`__iter__` lists)."""
        # Drawn when the first batch is requested, as the loop has always drawn it: first
        # the permutation, then (single process) the augmentation shifts of that batch.
        order = torch.randperm(self.n, generator=self.generator)
        r, w = self.rank, self.world_size
        for step in range(len(self)):
            lo, size = step * self.batch_size, self.global_size(step)
            yield order[lo + r * size // w : lo + (r + 1) * size // w]

    def __iter__(self) -> Iterator[list[int]]:
        return (idx.tolist() for idx in self.index_batches())


def make_loader(dataset: Dataset, **kwargs: Any) -> DataLoader:
    """A single-process DataLoader over ``dataset`` that never draws from torch's global
    generator (``kwargs`` are DataLoader's: ``batch_size``, ``batch_sampler``...)."""
    # A throw-away generator for the DataLoader's own base seed (it draws one number per
    # epoch, for worker processes we do not use): without it that draw would come from
    # torch's global generator and shift the dropout stream.
    return DataLoader(dataset, num_workers=0, generator=torch.Generator(), **kwargs)


def epoch_batches(
    data: Data, sampler: GlobalBatchSampler
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of this rank's ``(x, y)`` batches, in the sampler's order.

    A Dataset goes through a DataLoader. A Split is indexed directly with the same index
    tensors: the same batches, without the DataLoader's per-batch overhead (measured here:
    0.2 ms a batch, 0.1 s per MNIST epoch, next to 0.7 s for a whole LeNet-300-100 epoch).
    """
    if isinstance(data, Split):
        for idx in sampler.index_batches():
            yield data.x[idx], data.y[idx]
    else:
        yield from make_loader(data, batch_sampler=sampler)
