"""Wrapping a model for training across ranks: DistributedDataParallel, and a clear refusal
of FSDP or an already-wrapped model (pruning masks and codebooks need whole weights)."""

from __future__ import annotations

import inspect

from torch import nn

from deep_compression.distributed.group import collective_errors, device, local_rank, world_size
from deep_compression.errors import ConfigError


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
