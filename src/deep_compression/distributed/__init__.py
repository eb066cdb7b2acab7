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
phase written with them runs unchanged with 1 process or N. Importing this package does not
initialise anything. See docs/DISTRIBUTED.md for the launch commands and semantics.

The package is split by meaning: :mod:`.group` (joining, leaving, rank queries, errors),
:mod:`.collectives` (broadcasts, checks, sums, rank-0-only steps) and :mod:`.ddp` (wrapping
a model for training); every public name is importable from here.
"""

from deep_compression.distributed.collectives import (
    all_reduce_sum,
    all_reduce_sum_,
    broadcast_buffers_,
    broadcast_state_,
    check_same_across_ranks,
    check_same_value,
    rank_seed,
    run_on_main,
    shard,
    state_checksums,
)
from deep_compression.distributed.ddp import refuse_wrapped, wrap_ddp
from deep_compression.distributed.group import (
    DEFAULT_TIMEOUT_S,
    ENV_TIMEOUT,
    barrier,
    collective_errors,
    device,
    init_from_env,
    is_initialized,
    is_main,
    local_rank,
    rank,
    session,
    shutdown,
    world_size,
)

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
