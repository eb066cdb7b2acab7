"""Many processes, one run: torchrun's environment in, rank 0's decisions and files out.

``torchrun --nproc-per-node N -m deep_compression ...`` starts N copies of a command with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their
environment. :func:`init_from_env` turns that into the default process group (gloo on CPU,
nccl when CUDA is available) with a bounded timeout, and the other functions here are the
few collective steps a phase needs:

- :func:`broadcast_state_`: make every rank hold rank 0's parameters *and* buffers (pruning
  masks, cluster indices and codebooks live there, as parametrizations);
- :func:`check_same_across_ranks`: a checksum of every state-dict tensor, compared across
  ranks after a phase; a difference raises :class:`DistributedError` naming the phase and
  the first differing tensor (:func:`check_same_value` does the same for a string);
- :func:`shard`, :func:`all_reduce_sum`: split an evaluation across ranks and add up;
- :func:`run_on_main`: rank 0 alone writes a file, and every rank learns whether it worked;
- :func:`collective_errors`: a dead or hung rank becomes a one-line
  :class:`DistributedError` instead of a traceback or a hang.

In one process (``WORLD_SIZE`` unset or 1) every function is a no-op or the identity, so a
phase written with them runs unchanged with 1 process or N. Importing this module does not
initialise anything. See docs/DISTRIBUTED.md for the launch commands and semantics.
"""

from __future__ import annotations

import atexit
import datetime
import hashlib
import inspect
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from deep_compression.errors import ConfigError, DistributedError

__all__ = [
    "ENV_TIMEOUT",
    "DEFAULT_TIMEOUT_S",
    "init_from_env",
    "shutdown",
    "session",
    "is_initialized",
    "rank",
    "world_size",
    "local_rank",
    "is_main",
    "device",
    "barrier",
    "broadcast_state_",
    "broadcast_buffers_",
    "state_checksums",
    "check_same_across_ranks",
    "check_same_value",
    "shard",
    "all_reduce_sum",
    "all_reduce_sum_",
    "rank_seed",
    "run_on_main",
    "collective_errors",
    "refuse_wrapped",
    "wrap_ddp",
]

T = TypeVar("T")

ENV_TIMEOUT = "DEEP_COMPRESSION_DIST_TIMEOUT"
# Seconds a collective may wait for the other ranks before the run ends with an error. A
# dead rank is noticed at once (its sockets close); this bounds the case of a rank that is
# alive but stuck. Rank-0-only work between collectives (writing a .dcz of VGG-16 takes
# about 2 s here) must stay far below it.
DEFAULT_TIMEOUT_S = 300.0

_owned_group = False  # True when init_from_env created the group (shutdown destroys it)
_session_depth = 0


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"environment variable {name}={text!r} is not an integer") from None


def _timeout_s() -> float:
    text = os.environ.get(ENV_TIMEOUT)
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 86400:
        raise ConfigError(f"{ENV_TIMEOUT}={text!r}: expected a number of seconds in (0, 86400]")
    return value


def init_from_env(*, backend: str | None = None) -> bool:
    """Join the process group described by torchrun's environment variables, if any.

    Idempotent; a no-op (returning False) when ``WORLD_SIZE`` is unset or 1. With
    ``WORLD_SIZE > 1`` it initialises torch's default process group with the ``env://``
    rendezvous (``MASTER_ADDR``/``MASTER_PORT``), backend nccl when CUDA is available (and
    then binds this process to GPU ``LOCAL_RANK``) or gloo otherwise, and a timeout of
    ``$DEEP_COMPRESSION_DIST_TIMEOUT`` seconds (default 300) for every collective.

    Args:
        backend: force ``"gloo"`` or ``"nccl"`` instead of the automatic choice.

    Returns:
        True when this process is one of several ranks.

    Raises:
        ConfigError: malformed or inconsistent environment (``RANK`` outside ``0..WORLD_SIZE-1``,
            no ``MASTER_ADDR``), unknown backend.
        DistributedError: the other ranks did not join within the timeout.
    """
    global _owned_group
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    size = _env_int("WORLD_SIZE")
    if size is None or size == 1:
        return False
    if size < 1:
        raise ConfigError(f"environment variable WORLD_SIZE={size} must be >= 1")
    if not dist.is_available():
        raise ConfigError(f"WORLD_SIZE={size} but this torch build has no torch.distributed")
    rank_ = _env_int("RANK")
    if rank_ is None or not 0 <= rank_ < size:
        raise ConfigError(
            f"WORLD_SIZE={size} needs RANK in 0..{size - 1}, got {os.environ.get('RANK')!r} "
            "(launch with torchrun, which sets it)"
        )
    local = _env_int("LOCAL_RANK")
    local = rank_ if local is None else local
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={size} but {' and '.join(missing)} unset (launch with torchrun, "
            "which sets them)"
        )
    if backend is None:
        use_nccl = torch.cuda.is_available() and dist.is_nccl_available()
        backend = "nccl" if use_nccl else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ConfigError(f"distributed backend must be 'gloo' or 'nccl', got {backend!r}")
    if backend == "nccl":
        torch.cuda.set_device(local)  # one process per GPU: LOCAL_RANK picks it
    timeout = _timeout_s()
    try:
        dist.init_process_group(
            backend,
            init_method="env://",
            rank=rank_,
            world_size=size,
            timeout=datetime.timedelta(seconds=timeout),
        )
    except (RuntimeError, ValueError) as e:
        where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        raise DistributedError(
            f"rank {rank_} of {size}: could not join the process group at {where} "
            f"within {timeout:.0f} s ({_short(e)})"
        ) from None
    _owned_group = True
    # fit() joins the group by itself when a script did not; leave it cleanly at exit then.
    atexit.register(shutdown)
    return True


def shutdown() -> None:
    """Leave the process group if :func:`init_from_env` created it (else nothing)."""
    global _owned_group
    if _owned_group and dist.is_initialized():
        dist.destroy_process_group()
    _owned_group = False


@contextmanager
def session(*, backend: str | None = None) -> Iterator[bool]:
    """``with session():`` around a command: :func:`init_from_env`, then :func:`shutdown`
    when the outermost session ends (sessions nest: the CLI's ``main`` and a command may
    both open one). Yields whether this process is one of several ranks.
    """
    global _session_depth
    active = init_from_env(backend=backend)
    _session_depth += 1
    try:
        yield active
    finally:
        _session_depth -= 1
        if _session_depth == 0:
            shutdown()


def is_initialized() -> bool:
    """Whether a process group is active (whatever its size)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 in a single process)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """Number of processes in the run (1 in a single process)."""
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    """This process's index on its machine (``LOCAL_RANK``; 0 in a single process)."""
    if not is_initialized():
        return 0
    value = _env_int("LOCAL_RANK")
    return rank() if value is None else value


def is_main() -> bool:
    """True on rank 0, which alone prints, writes files and shows progress bars."""
    return rank() == 0


def device() -> torch.device:
    """Where this rank computes: ``cuda:LOCAL_RANK`` under nccl, else the CPU."""
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


def _comm_device() -> torch.device:
    # nccl only moves CUDA tensors; gloo only CPU ones (for the collectives used here).
    return device()


_TORCH_PREFIX = re.compile(r"^\[[^\]]*\]\s*")


def _short(e: BaseException) -> str:
    """The first sentence of a torch/gloo error, without its source-file prefix."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = _TORCH_PREFIX.sub("", text)
    text = text.split(". This is typically")[0]
    return text[:200]


_COMM_WORDS = ("gloo", "nccl", "connection", "timed out", "timeout", "socket", "peer", "store")


def _is_comm_error(e: BaseException) -> bool:
    dist_error = getattr(dist, "DistError", None)
    if dist_error is not None and isinstance(e, dist_error):
        return True
    if not isinstance(e, RuntimeError):
        return False
    text = str(e).lower()
    return any(w in text for w in _COMM_WORDS)


@contextmanager
def collective_errors(phase: str) -> Iterator[None]:
    """Turn a failed collective (a rank died, was killed or is stuck past the timeout) into
    one :class:`DistributedError` naming ``phase``; other exceptions pass through.

    gloo notices a dead peer at once (its sockets close: measured 0.07 s here) and a stuck
    one after the timeout of :func:`init_from_env`.
    """
    try:
        yield
    except DistributedError:
        raise
    except Exception as e:
        if world_size() > 1 and _is_comm_error(e):
            raise DistributedError(
                f"rank {rank()} of {world_size()}, during {phase}: lost contact with another "
                f"rank ({_short(e)}); a rank died, was killed or was stuck for more than "
                f"{_timeout_s():.0f} s (${ENV_TIMEOUT}); see the other ranks' output"
            ) from None
        raise


def barrier(phase: str = "barrier") -> None:
    """Wait until every rank gets here (no-op in one process)."""
    if world_size() > 1:
        with collective_errors(phase):
            dist.barrier()


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
    dev = _comm_device()
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
    local = local.to(_comm_device())
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
        buf = tensor.detach().to(_comm_device())
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
    flag = torch.tensor([0 if error is not None else 1], dtype=torch.int64, device=_comm_device())
    with collective_errors(phase):
        dist.broadcast(flag, 0)
    if error is not None:
        raise error
    if int(flag.item()) != 1:
        raise DistributedError(f"{phase} failed on rank 0 (see its message); rank {rank()} stops")
    return result


def refuse_wrapped(model: nn.Module) -> None:
    """Refuse FSDP and already-wrapped models with a :class:`ConfigError` saying why.

    FSDP is not supported: it flattens and shards parameters, while pruning masks, cluster
    indices and codebooks are parametrizations whose forward needs the whole tensor; a
    sharded weight would silently stop being masked (what SparseML users reported). Every
    model compressed here fits one device, so DistributedDataParallel (one full replica per
    rank) is what :func:`~deep_compression.train.fit` uses.
    """

    # Both FSDP generations (the FullyShardedDataParallel wrapper and fully_shard's FSDPModule
    # subclasses) come from torch.distributed.fsdp; checking the class hierarchy by module
    # name avoids importing it (0.9 s) in runs that never touch FSDP.
    def is_fsdp(m: nn.Module) -> bool:
        return any(c.__module__.startswith("torch.distributed.fsdp") for c in type(m).__mro__)

    for name, m in model.named_modules():
        if is_fsdp(m):
            where = f" (module {name!r})" if name else ""
            raise ConfigError(
                f"FSDP is not supported{where}: pruning masks, cluster indices and codebooks "
                "are parametrizations that need whole weights, and a sharded weight would "
                "stop being masked. Pass the plain model: under torchrun, training uses "
                "DistributedDataParallel (one full copy per rank)"
            )
        if isinstance(m, nn.parallel.DistributedDataParallel | nn.DataParallel):
            raise ConfigError(
                f"the model is already wrapped in {type(m).__name__}; pass the plain "
                "module (training wraps it in DistributedDataParallel itself under torchrun)"
            )


def wrap_ddp(model: nn.Module) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when there are several ranks, else
    ``model`` itself. Call the wrapper for training forward passes; the optimizer and
    everything else keep using ``model`` (they share the parameters).

    ``broadcast_buffers=False``: masks and cluster indices never change while training, and
    broadcasting them before every forward pass costs time; float buffers (BatchNorm
    statistics) are re-synchronised by the caller with :func:`broadcast_buffers_` before
    they are used (fit does so after every epoch). DDP's constructor checks that parameter
    shapes agree across ranks and broadcasts rank 0's parameters.
    """
    if world_size() <= 1:
        return model
    refuse_wrapped(model)
    ids = [local_rank()] if device().type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    # torch 2.13 renamed the switch (and deprecated the old name with a warning); the new
    # one still syncs buffers once at construction, which is harmless: they are equal.
    params = inspect.signature(ddp.__init__).parameters
    no_sync = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
    with collective_errors("wrapping the model in DistributedDataParallel"):
        return ddp(model, device_ids=ids, **{no_sync: False})
