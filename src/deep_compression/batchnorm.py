"""BatchNorm around compression: re-estimate its statistics, fold it for deployment.

* :func:`reestimate_batchnorm_`: pruning and quantization change what every BatchNorm
  layer sees, while its running mean and variance still describe the dense network. A
  few forward passes over training batches (no gradient) measure them again; it often
  recovers most of the accuracy that quantization without fine-tuning loses.
* :func:`fold_batchnorm_`: ``conv -> BatchNorm`` (or ``linear -> BatchNorm1d``) becomes
  one layer with ``w' = w * g / sqrt(v + eps)`` and ``b' = (b - m) * g / sqrt(v + eps) +
  beta``; the BatchNorm becomes ``nn.Identity``. For deployment (``export --fold-bn``):
  the folded weights are no longer the file's shared values.
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader

from deep_compression import distributed as dist
from deep_compression.errors import ConfigError

__all__ = ["batchnorm_layers", "reestimate_batchnorm_", "fold_batchnorm_"]


def batchnorm_layers(model: nn.Module) -> dict[str, _BatchNorm]:
    """The BatchNorm layers of ``model`` by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, _BatchNorm)}


@torch.no_grad()
def reestimate_batchnorm_(
    model: nn.Module,
    data: torch.utils.data.Dataset,
    batches: int,
    batch_size: int = 128,
    seed: int = 0,
) -> int:
    """Measure every BatchNorm layer's running mean and variance again, in place.

    The statistics are reset and accumulated as exact averages (``momentum=None``) over
    ``batches`` seeded random training batches, in train mode without gradients; other
    modules' behaviour in train mode (dropout) does not touch any parameter. Under
    torchrun, rank 0's statistics are given to every rank.

    Returns:
        The number of BatchNorm layers re-estimated (0: none, nothing done).
    """
    layers = batchnorm_layers(model)
    if not layers or batches <= 0:
        return 0
    was_training = model.training
    momenta = {n: m.momentum for n, m in layers.items()}
    for m in layers.values():
        m.reset_running_stats()
        m.momentum = None
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=gen)
    model.train()
    try:
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            model(x)
    finally:
        for n, m in layers.items():
            m.momentum = momenta[n]
        model.train(was_training)
    if dist.is_initialized():
        dist.broadcast_buffers_(model, floating_only=True, phase="BatchNorm re-estimation")
    return len(layers)


_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@torch.no_grad()
def _fold(layer: nn.Module, bn: _BatchNorm) -> None:
    scale = (
        bn.weight / torch.sqrt(bn.running_var + bn.eps)
        if bn.affine
        else 1.0 / torch.sqrt(bn.running_var + bn.eps)
    )
    shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    shape = (-1,) + (1,) * (layer.weight.ndim - 1)
    layer.weight.mul_(scale.reshape(shape))
    bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * scale + shift
    if layer.bias is None:
        layer.bias = nn.Parameter(new_bias)
    else:
        layer.bias.copy_(new_bias)


def fold_batchnorm_(model: nn.Module) -> list[str]:
    """Fold every BatchNorm that directly follows a convolution or linear layer (and is
    that layer's only user) into it, in place; returns the folded BatchNorm names.

    The model must be plain (no parametrizations: decode a file first) and traceable by
    ``torch.fx``; the pairs are found on the traced graph, so any architecture works.

    Raises:
        ConfigError: parametrized layers, or a model ``torch.fx`` cannot trace.
    """
    if any(torch.nn.utils.parametrize.is_parametrized(m) for m in model.modules()):
        raise ConfigError("fold_batchnorm_ needs a plain model (decode the file first)")
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as e:  # noqa: BLE001 - fx raises many kinds on untraceable code
        raise ConfigError(f"cannot trace the model to find conv -> BatchNorm pairs ({e})") from None
    modules = dict(model.named_modules())
    # A module called more than once (shared weights) is left alone.
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    folded = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _BatchNorm):
            continue
        src = node.args[0] if node.args else None
        if not isinstance(src, torch.fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        if calls[node.target] != 1 or calls[src.target] != 1:
            continue
        layer = modules.get(src.target)
        if (
            not isinstance(layer, _FOLDABLE)
            or layer.weight.shape[0] != modules[node.target].num_features
        ):
            continue
        _fold(layer, modules[node.target])
        parent, _, child = node.target.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
        folded.append(node.target)
    return folded
