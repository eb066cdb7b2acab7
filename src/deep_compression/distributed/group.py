"""The process group's lifetime and this process's place in it: joining from torchrun's
environment with a bounded timeout, leaving at the end, rank queries, and turning a failed
collective into one :class:`~deep_compression.errors.DistributedError`.

Everything else in :mod:`deep_compression.distributed` builds on these; in one process they
answer rank 0 of 1 without touching ``torch.distributed``.
"""

from __future__ import annotations

import atexit
import datetime
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

from deep_compression.errors import ConfigError, DistributedError

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
    """Where this rank computes: ``cuda:LOCAL_RANK`` under nccl, else the CPU.

    Also where a tensor must be for a collective: nccl only moves CUDA tensors, gloo only
    CPU ones (for the collectives used here).
    """
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


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
