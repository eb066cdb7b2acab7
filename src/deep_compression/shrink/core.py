"""Structured pruning end to end: trace the groups, choose the channels, cut them out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from deep_compression.errors import ConfigError
from deep_compression.layer_config import check_patterns, resolve
from deep_compression.shrink.config import ShrinkConfig, kept_count
from deep_compression.shrink.criteria import removal_order
from deep_compression.shrink.graph import ChannelGroup, trace_groups
from deep_compression.shrink.surgery import remove_channels_

__all__ = [
    "ShrinkReport",
    "prunable_groups",
    "check_keep",
    "plan_shrink",
    "shrink_",
    "count_macs",
    "float_bytes",
]


@dataclass(frozen=True)
class ShrinkReport:
    """What :func:`shrink_` did: per group ``(channels before, after)``, and the model's
    parameters, float32 bytes (of every floating tensor of its state, as the rate counts
    them) and multiply-accumulates per input, before and after."""

    widths: Mapping[str, tuple[int, int]]
    params: tuple[int, int]
    macs: tuple[int, int]
    float_bytes: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "widths": {k: list(v) for k, v in self.widths.items()},
            "params": list(self.params),
            "macs": list(self.macs),
            "float_bytes": list(self.float_bytes),
        }


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of every ``Conv2d`` and ``Linear`` for one input of the shape
    of ``example[:1]`` (the FLOPs are about twice this)."""
    total = 0

    def hook(layer: nn.Module, args: tuple, out: torch.Tensor) -> None:
        nonlocal total
        w = layer.weight
        per_output = w[0].numel() if isinstance(layer, nn.Conv2d) else w.shape[1]
        total += out[0].numel() * per_output

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


def float_bytes(model: nn.Module) -> int:
    """float32 bytes of every floating tensor of ``model``'s state dict."""
    return sum(4 * t.numel() for t in model.state_dict().values() if t.is_floating_point())


def prunable_groups(groups: Sequence[ChannelGroup]) -> list[ChannelGroup]:
    return [g for g in groups if not g.pinned]


def check_keep(config: ShrinkConfig, groups: Sequence[ChannelGroup]) -> None:
    """Every key of ``config.keep`` must match a group, and a pinned group named exactly
    must keep all its channels (wildcards skip pinned groups).

    Raises:
        ConfigError: naming the key.
    """
    check_patterns(config.keep, [g.name for g in groups], "shrink.keep")
    for g in groups:
        amount = config.keep.get(g.name)
        if g.pinned and amount is not None and kept_count(amount, g.size) < g.size:
            raise ConfigError(f"shrink.keep.{g.name}: this group cannot be pruned ({g.pinned})")


def plan_shrink(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    config: ShrinkConfig,
    inputs: torch.Tensor | None = None,
) -> dict[str, list[int]]:
    """Group name -> the channels to keep (sorted), by ``config.keep`` and
    ``config.criterion``; groups keeping everything are left out.

    Raises:
        ConfigError: a key of ``config.keep`` matches no prunable group, or names a
            pinned one with less than everything.
    """
    check_keep(config, groups)
    free = {g.name: g for g in prunable_groups(groups)}
    plan = {}
    for name, group in free.items():
        n = kept_count(resolve(config.keep, name, "shrink.keep"), group.size)
        if n >= group.size:
            continue
        order = removal_order(model, group, config.criterion, inputs)
        plan[name] = sorted(order[group.size - n :])
    return plan


def shrink_(
    model: nn.Module,
    config: ShrinkConfig,
    example: torch.Tensor,
    inputs: torch.Tensor | None = None,
) -> ShrinkReport:
    """Remove channels of ``model`` in place as ``config`` says.

    Args:
        model: a plain trained model (no parametrizations).
        config: criterion and amounts (its training tables are the caller's business:
            :func:`deep_compression.phases.shrink_phase` runs them).
        example: an input batch ``(N, ...)`` to trace shapes with (only its shape matters).
        inputs: calibration inputs for the ``reduce`` criterion.
    """
    groups = trace_groups(model, example)
    params = sum(p.numel() for p in model.parameters())
    macs, nbytes = count_macs(model, example), float_bytes(model)
    plan = plan_shrink(model, groups, config, inputs)
    remove_channels_(model, groups, plan)
    widths = {
        g.name: (g.size, len(plan.get(g.name, range(g.size)))) for g in prunable_groups(groups)
    }
    return ShrinkReport(
        widths=widths,
        params=(params, sum(p.numel() for p in model.parameters())),
        macs=(macs, count_macs(model, example)),
        float_bytes=(nbytes, float_bytes(model)),
    )
