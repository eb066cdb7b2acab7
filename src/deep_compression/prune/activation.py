"""Activation-aware importance: ``|w_ij| x mean|x_j|`` over a calibration batch (the
original project's single-neuron "reduce" at layer scale)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

import torch
from torch import nn

from deep_compression.errors import ConfigError

__all__ = ["activation_means", "activation_importance"]


def _conv_patch_abs_sum(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum over batch and output positions of ``|x|`` at every (channel, kernel offset).

    Returns ``(sums (C_in, *kernel), count)``; ``sums / count`` is the mean ``|x|`` that
    each weight ``w[o, c, k...]`` multiplies (the mean of ``|unfold(x)|``).
    """
    dims = len(layer.kernel_size)
    ax = x.abs()
    if x.dim() == dims + 1:  # unbatched input
        ax = ax.unsqueeze(0)
    pad = layer._reversed_padding_repeated_twice
    if any(pad):
        mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
        ax = nn.functional.pad(ax, pad, mode=mode)
    spatial = ax.shape[2:]
    out = [
        (spatial[d] - layer.dilation[d] * (layer.kernel_size[d] - 1) - 1) // layer.stride[d] + 1
        for d in range(dims)
    ]
    sums = torch.zeros((ax.shape[1], *layer.kernel_size), dtype=torch.float64)
    for offset in itertools.product(*(range(k) for k in layer.kernel_size)):
        index = [slice(None), slice(None)]
        for d in range(dims):
            start = offset[d] * layer.dilation[d]
            index.append(slice(start, start + layer.stride[d] * (out[d] - 1) + 1, layer.stride[d]))
        sums[(slice(None), *offset)] = ax[tuple(index)].sum(dim=[0, *range(2, dims + 2)]).double()
    return sums, ax.shape[0] * math.prod(out)


@torch.no_grad()
def activation_means(
    model: nn.Module, layers: Iterable[str], calibration: torch.Tensor, batch_size: int = 256
) -> dict[str, torch.Tensor]:
    """Mean ``|x|`` of the input each weight of each named layer multiplies.

    The model runs in eval mode (no dropout) on ``calibration`` (``(N, ...)`` inputs).

    Returns:
        ``{name: means}`` with ``means`` of shape ``(in_features,)`` for ``Linear`` and
        ``(C_in, *kernel_size)`` for convolutions.
    """
    modules = dict(model.named_modules())
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook_for(name: str):
        layer = modules[name]

        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach()
            if isinstance(layer, nn.Linear):
                s = x.abs().reshape(-1, x.shape[-1]).sum(0).double()
                c = x.numel() // x.shape[-1]
            else:
                s, c = _conv_patch_abs_sum(layer, x)
            sums[name] = sums[name] + s if name in sums else s
            counts[name] = counts.get(name, 0) + c

        return hook

    names = list(layers)
    handles = [modules[n].register_forward_pre_hook(hook_for(n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        for i in range(0, calibration.shape[0], batch_size):
            model(calibration[i : i + batch_size])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    missing = [n for n in names if n not in sums]
    if missing:
        raise ConfigError(f"layers {missing} were not called in the forward pass")
    return {n: (sums[n] / max(1, counts[n])).float() for n in names}


def activation_importance(layer: nn.Module, means: torch.Tensor) -> torch.Tensor:
    """``|w| * mean|x|`` broadcast to the weight's shape (grouped convolutions included)."""
    w = layer.weight.detach().abs()
    if isinstance(layer, nn.Linear):
        return w * means
    groups = layer.groups
    out_per_group = w.shape[0] // groups
    per_group = means.reshape(groups, w.shape[1], *means.shape[1:])
    return w * per_group.repeat_interleave(out_per_group, dim=0)
