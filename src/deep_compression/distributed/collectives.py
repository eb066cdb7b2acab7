"""Collective steps a phase needs between ranks: broadcasting rank 0's state, checking
that every rank holds the same model (or value), splitting and summing an evaluation, and
running a rank-0-only step (writing a file) so that its failure stops every rank.

Each one is a no-op or the identity in one process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from deep_compression.distributed.group import (
    collective_errors,
    device,
    is_main,
    rank,
    world_size,
)
from deep_compression.errors import DistributedError

T = TypeVar("T")


def _unique_tensors(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    seen: set[int] = set()
    out = []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def _broadcast_tensors_(tensors: list[torch.Tensor], src: int, phase: str) -> None:
    """Broadcast ``tensors`` in place from ``src``, one flat message per dtype."""
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t)
    dev = device()
    with torch.no_grad(), collective_errors(phase):
        for dtype in sorted(groups, key=str):  # the same order on every rank
            group = groups[dtype]
            flat = torch.cat([t.detach().reshape(-1).to(dev) for t in group])
            dist.broadcast(flat, src)
            offset = 0
            for t in group:
                n = t.numel()
                t.detach().copy_(flat[offset : offset + n].view_as(t))
                offset += n


def broadcast_state_(model: nn.Module, src: int = 0, phase: str = "broadcast") -> None:
    """Give every rank ``src``'s parameters and buffers, in place (no-op in one process).

    Buffers include pruning masks (bool), cluster indices (int8/int16) and any BatchNorm
    statistics; parameters include codebooks and ``parametrizations.weight.original``. Use
    it after a decision that only rank ``src`` made; prefer computing decisions identically
    on every rank and calling :func:`check_same_across_ranks`, which catches the bugs a
    broadcast would hide.
    """
    if world_size() > 1:
        tensors = _unique_tensors([*model.parameters(), *model.buffers()])
        _broadcast_tensors_(tensors, src, phase)


def broadcast_buffers_(
    model: nn.Module, src: int = 0, *, floating_only: bool = False, phase: str = "broadcast"
) -> None:
    """Broadcast ``src``'s buffers only (``floating_only``: only float ones, e.g. BatchNorm
    running statistics, which drift apart when each rank trains on its own shard)."""
    if world_size() > 1:
        buffers = [b for b in model.buffers() if b.is_floating_point() or not floating_only]
        _broadcast_tensors_(_unique_tensors(buffers), src, phase)


def _digest(name: str, t: torch.Tensor) -> int:
    """A 64-bit blake2b digest of a tensor's name, dtype, shape and raw bytes, as an int64."""
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    if flat.numel():
        # The raw bytes, so -0.0 and 0.0 (or two NaN payloads) count as different: ranks
        # must hold bit-identical models, not nearly equal ones.
        h.update(memoryview(flat.view(torch.uint8).numpy()))
    return int.from_bytes(h.digest(), "little", signed=True)


def state_checksums(model: nn.Module) -> dict[str, int]:
    """``{state-dict name: 64-bit checksum}`` of every tensor in ``model.state_dict()``."""
    return {name: _digest(name, t) for name, t in model.state_dict().items()}


def _all_gather(local: torch.Tensor, phase: str) -> list[torch.Tensor]:
    local = local.to(device())
    out = [torch.empty_like(local) for _ in range(world_size())]
    with collective_errors(phase):
        dist.all_gather(out, local)
    return [t.cpu() for t in out]


def check_same_across_ranks(model: nn.Module, phase: str) -> None:
    """Raise unless every rank's ``model.state_dict()`` is bit-identical to rank 0's.

    ``phase`` says when, in the error message: ``"after round 3 retrain"``.

    Every rank computes a 64-bit checksum of each state-dict tensor (parameters, masks,
    cluster indices, codebooks, buffers) and all ranks gather them all, so every rank
    raises the same error. A no-op in one process.

    Raises:
        DistributedError: naming ``phase``, the first differing tensor (in state-dict
            order) and the ranks that differ from rank 0.
    """
    size = world_size()
    if size <= 1:
        return
    sums = state_checksums(model)
    names = list(sums)
    layout = _digest("|".join(names), torch.empty(0))
    heads = _all_gather(torch.tensor([len(names), layout], dtype=torch.int64), phase)
    odd = [r for r, h in enumerate(heads) if not torch.equal(h, heads[0])]
    if odd:
        raise DistributedError(
            f"{phase}: rank(s) {odd} hold different state-dict entries than rank 0 "
            f"({int(heads[0][0])} tensors on rank 0, {int(heads[odd[0]][0])} on rank {odd[0]})"
        )
    gathered = torch.stack(_all_gather(torch.tensor(list(sums.values()), dtype=torch.int64), phase))
    differs = (gathered != gathered[0]).any(0)  # (tensors,)
    if bool(differs.any()):
        first = int(differs.nonzero()[0, 0])
        ranks = [r for r in range(size) if gathered[r, first] != gathered[0, first]]
        raise DistributedError(
            f"{phase}: the ranks' models differ: first differing tensor {names[first]!r} "
            f"(rank(s) {ranks} differ from rank 0); {int(differs.sum())} of {len(names)} "
            "state-dict tensors differ"
        )


def check_same_value(value: str | bytes, phase: str) -> None:
    """Raise unless every rank passes the same ``value`` (a digest is compared, not the
    value): for decisions that are not tensors, e.g. which phases a resumed run skips, the
    recipe's digest, the dataset a rank loaded. A no-op in one process.

    Raises:
        DistributedError: naming ``phase`` and the ranks whose value differs from rank 0's.
    """
    if world_size() <= 1:
        return
    data = value.encode() if isinstance(value, str) else bytes(value)
    h = hashlib.blake2b(data, digest_size=8).digest()
    mine = torch.tensor([int.from_bytes(h, "little", signed=True)], dtype=torch.int64)
    values = [int(t) for t in _all_gather(mine, phase)]
    odd = [r for r, v in enumerate(values) if v != values[0]]
    if odd:
        raise DistributedError(f"{phase}: rank(s) {odd} disagree with rank 0")


def shard(n: int) -> range:
    """This rank's contiguous share of ``range(n)``: sizes differ by at most one, no item
    is dropped or repeated (``range(n)`` in one process)."""
    size, r = world_size(), rank()
    return range(r * n // size, (r + 1) * n // size)


def all_reduce_sum_(tensor: torch.Tensor, phase: str = "all-reduce") -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place; returns it (unchanged in one process)."""
    if world_size() > 1:
        buf = tensor.detach().to(device())
        with collective_errors(phase):
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        tensor.detach().copy_(buf)
    return tensor


def all_reduce_sum(*values: float, phase: str = "all-reduce") -> tuple[float, ...]:
    """Sum each number over the ranks, in float64 (exact for integer counts below 2**53).

    >>> all_reduce_sum(3.0, 7)  # one process: the values themselves
    (3.0, 7.0)
    """
    if world_size() <= 1:
        return tuple(float(v) for v in values)
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    return tuple(all_reduce_sum_(t, phase).tolist())


def rank_seed(seed: int, rank_: int | None = None) -> int:
    """A seed for this rank's own random stream (dropout, augmentation), derived from
    ``(seed, rank)`` with numpy's SeedSequence so streams of different ranks are unrelated.

    >>> rank_seed(0, 0) != rank_seed(0, 1)
    True
    """
    r = rank() if rank_ is None else rank_
    return int(np.random.SeedSequence([seed, r]).generate_state(1, dtype=np.uint64)[0] >> 1)


def run_on_main(fn: Callable[[], T], phase: str) -> T | None:
    """Run ``fn`` on rank 0 only (writing a file, a report), then tell every rank whether
    it worked, so a failure on rank 0 stops all ranks here instead of leaving them waiting
    at the next collective. Returns ``fn()`` on rank 0, None elsewhere; in one process, just
    ``fn()``.

    Raises:
        whatever ``fn`` raised, on rank 0; :class:`DistributedError` on the other ranks.
    """
    if world_size() <= 1:
        return fn()
    result: T | None = None
    error: BaseException | None = None
    if is_main():
        try:
            result = fn()
        except BaseException as e:  # re-raised below, after the others know
            error = e
    flag = torch.tensor([0 if error is not None else 1], dtype=torch.int64, device=device())
    with collective_errors(phase):
        dist.broadcast(flag, 0)
    if error is not None:
        raise error
    if int(flag.item()) != 1:
        raise DistributedError(f"{phase} failed on rank 0 (see its message); rank {rank()} stops")
    return result
