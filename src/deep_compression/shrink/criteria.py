"""Which channels of a group to remove first: the criteria of structured pruning.

Each criterion gives a *removal order* of a group's channels (first = least needed):

``l1``, ``l2``
    the norm of each channel's filters (Li et al., 2017): the rows of every producing
    layer's weight and bias (a residual group sums over its producers).
``bn``
    ``|gamma|``, the scale of the BatchNorm after each channel (network slimming, Liu et
    al., 2017); summed over the group's BatchNorm layers.
``lasso``
    the l2 norm of the whole channel group, weights, biases and BatchNorm scale and
    shift together: the quantity the group-lasso penalty of :mod:`.lasso` drives to
    zero during training, so the channels it emptied go first.
``reduce``
    the original project's neuron "reduce" generalised from a neuron's inputs to a
    layer's channels. Reduce keeps a neuron's pre-activation by removing the inputs
    whose contributions ``w_i x_i`` cancel; here the contribution of channel ``c`` is
    ``C_c``, what it adds to every pre-activation of every layer reading it, over a
    calibration batch. Removing a set ``R`` changes those pre-activations by
    ``sum_{c in R} C_c``, so channels are removed greedily, each time the one that keeps
    ``|| sum_{c in R} C_c ||^2`` smallest. With the Gram matrix ``G = C C^T`` that is
    ``E(R + c) = E(R) + G_cc + 2 sum_{r in R} G_rc``: contributions that cancel are
    removed together, as in the single-neuron reduce.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deep_compression.errors import ConfigError
from deep_compression.shrink.graph import ChannelGroup

__all__ = ["CRITERIA", "channel_scores", "reduce_order", "greedy_cancel", "removal_order"]

CRITERIA = ("l1", "l2", "bn", "lasso", "reduce")


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as ``(channels, rest)``."""
    return t.detach().reshape(t.shape[0], -1)


def group_tensors(
    modules: Mapping[str, nn.Module], group: ChannelGroup, kinds: Sequence[str]
) -> list[torch.Tensor]:
    """Each ``(size, k)`` slice of a parameter the group's channels own (``out``
    members' weight and bias rows, ``bn`` members' weight and bias), with grad history
    (for the penalty); ``kinds`` chooses the members."""
    out = []
    for m in group.members:
        if m.kind not in kinds:
            continue
        layer = modules[m.module]
        for name in ("weight", "bias"):
            t = getattr(layer, name, None)
            if t is not None:
                out.append(t.reshape(t.shape[0], -1)[m.offset : m.offset + group.size])
    return out


def channel_scores(model: nn.Module, group: ChannelGroup, criterion: str) -> torch.Tensor:
    """``(size,)`` importance of each channel by a norm criterion (higher = keep)."""
    modules = dict(model.named_modules())
    if criterion in ("l1", "l2"):
        rows = [
            _rows(modules[m.module].weight)[m.offset : m.offset + group.size]
            for m in group.members
            if m.kind == "out"
        ]
        rows += [
            _rows(b)
            for m in group.members
            if m.kind == "out" and (b := modules[m.module].bias) is not None
        ]
        if criterion == "l1":
            return sum(r.abs().sum(1) for r in rows)  # type: ignore[return-value]
        return sum(r.square().sum(1) for r in rows).sqrt()  # type: ignore[union-attr]
    if criterion == "bn":
        gammas = [modules[m.module].weight.detach().abs() for m in group.members if m.kind == "bn"]
        if not gammas:
            raise ConfigError(f"criterion 'bn': group {group.name!r} has no BatchNorm")
        return sum(g[: group.size] for g in gammas)  # type: ignore[return-value]
    if criterion == "lasso":
        with torch.no_grad():
            parts = group_tensors(modules, group, ("out", "bn", "dw"))
            return sum(p.square().sum(1) for p in parts).sqrt()  # type: ignore[union-attr]
    raise ConfigError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")


def greedy_cancel(gram: torch.Tensor) -> list[int]:
    """The greedy removal order for the Gram matrix ``gram`` ``(n, n)`` of contributions:
    each step removes the channel ``c`` minimising ``|| sum_{r in R + c} C_r ||^2``
    (ties: the lowest index)."""
    n = gram.shape[0]
    gram = gram.double()
    cross = torch.zeros(n, dtype=torch.float64)  # sum_{r in R} G_rc
    left = torch.ones(n, dtype=torch.bool)
    order = []
    for _ in range(n):
        cost = gram.diagonal() + 2 * cross
        cost[~left] = float("inf")
        c = int(torch.argmin(cost))
        order.append(c)
        left[c] = False
        cross += gram[c]
    return order


def _contributions(layer: nn.Module, x: torch.Tensor, offset: int, size: int, spatial: int):
    """``(size, N * outputs)``: what each channel of the group adds to ``layer``'s
    pre-activations on the inputs ``x`` (bias excluded)."""
    w = layer.weight.detach()
    if isinstance(layer, nn.Linear):
        n = x.shape[0]
        xs = x.reshape(n, -1, spatial)[:, offset : offset + size]  # (N, size, spatial)
        ws = w.reshape(w.shape[0], -1, spatial)[:, offset : offset + size]  # (out, size, s)
        contrib = torch.einsum("nks,oks->kno", xs, ws)  # (size, N, out)
        return contrib.reshape(size, -1)
    assert isinstance(layer, nn.Conv2d) and layer.groups == 1
    xs = x[:, offset : offset + size]
    out = []
    for c in range(size):  # one channel at a time: (N, 1, H, W) * (out, 1, kh, kw)
        y = F.conv2d(
            xs[:, c : c + 1],
            w[:, offset + c : offset + c + 1],
            None,
            layer.stride,
            layer.padding,
            layer.dilation,
        )
        out.append(y.reshape(-1))
    return torch.stack(out)


def reduce_order(model: nn.Module, group: ChannelGroup, inputs: torch.Tensor) -> list[int]:
    """The ``reduce`` removal order of ``group``'s channels, from the activations that
    ``inputs`` (a calibration batch) gives the layers reading them."""
    modules = dict(model.named_modules())
    readers = [m for m in group.members if m.kind == "in"]
    if not readers:
        raise ConfigError(f"criterion 'reduce': no layer reads group {group.name!r}")
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        modules[m.module].register_forward_pre_hook(
            lambda mod, args, name=m.module: seen.setdefault(name, args[0].detach())
        )
        for m in readers
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    gram = torch.zeros(group.size, group.size, dtype=torch.float64)
    for m in readers:
        c = _contributions(modules[m.module], seen[m.module], m.offset, group.size, m.spatial)
        c = c.double()
        gram += c @ c.T
    return greedy_cancel(gram)


def removal_order(
    model: nn.Module, group: ChannelGroup, criterion: str, inputs: torch.Tensor | None = None
) -> list[int]:
    """The group's channels, the one to remove first first (ties: lowest index first)."""
    if criterion == "reduce":
        if inputs is None:
            raise ConfigError("criterion 'reduce' needs calibration inputs")
        return reduce_order(model, group, inputs)
    scores = channel_scores(model, group, criterion).double()
    return sorted(range(group.size), key=lambda c: (float(scores[c]), c))
