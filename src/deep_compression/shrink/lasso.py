"""Group lasso: a penalty that empties whole channels while the network trains.

The penalty is ``strength * sum_g ||theta_g||_2`` over the prunable channel groups,
``theta_g`` being every weight and bias that channel ``g`` owns (its filters, its
BatchNorm scale and shift; :func:`~.criteria.group_tensors`). Its gradient,
``strength * theta_g / ||theta_g||``, shrinks every weight of a channel at the same rate
regardless of its size, so weak channels reach zero as a whole (Yuan and Lin, 2006;
Wen et al., 2016, "structured sparsity learning"), and the ``lasso`` criterion then
removes them at no cost.

:func:`group_lasso` adds that gradient through tensor hooks, inside a ``with`` block,
so any training loop (here :func:`deep_compression.train.fit`) trains with the penalty
without knowing about it; the hooks are removed on leaving the block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from deep_compression.shrink.criteria import group_tensors
from deep_compression.shrink.graph import ChannelGroup

__all__ = ["group_lasso", "lasso_penalty"]

# Below this norm a group counts as empty: its gradient is not divided by ~0.
_EPS = 1e-12


def lasso_penalty(model: nn.Module, groups: Sequence[ChannelGroup]) -> torch.Tensor:
    """``sum_g ||theta_g||_2`` over the channels of ``groups`` (a scalar with grad)."""
    modules = dict(model.named_modules())
    total = torch.zeros(())
    for g in groups:
        parts = group_tensors(modules, g, ("out", "bn", "dw"))
        total = total + sum(p.square().sum(1) for p in parts).clamp_min(_EPS).sqrt().sum()
    return total


def _slices(
    modules: dict[str, nn.Module], groups: Sequence[ChannelGroup]
) -> list[list[tuple[nn.Parameter, int, int]]]:
    """Per group, ``(parameter, first row, rows)`` of every tensor its channels own."""
    out = []
    for g in groups:
        parts = []
        for m in g.members:
            if m.kind in ("out", "bn", "dw"):
                for name in ("weight", "bias"):
                    p = getattr(modules[m.module], name, None)
                    if isinstance(p, nn.Parameter):
                        parts.append((p, m.offset, g.size))
        out.append(parts)
    return out


@contextlib.contextmanager
def group_lasso(
    model: nn.Module, groups: Sequence[ChannelGroup], strength: float
) -> Iterator[None]:
    """Within the block, every backward pass adds the gradient of
    ``strength * lasso_penalty(model, groups)`` to the parameters' gradients:
    ``strength * theta_g / ||theta_g||`` for each channel's tensors ``theta_g``."""
    if strength <= 0 or not groups:
        yield
        return
    slices = _slices(dict(model.named_modules()), groups)

    def rows(p: torch.Tensor) -> torch.Tensor:
        return p.detach().reshape(p.shape[0], -1)

    def extra(p: nn.Parameter) -> torch.Tensor:
        # The norms from the current values (the step has not been taken yet).
        grad = torch.zeros_like(rows(p))
        for parts in slices:
            if not any(q is p for q, _, _ in parts):
                continue
            norms = sum(rows(q)[a : a + n].square().sum(1) for q, a, n in parts)
            norms = norms.clamp_min(_EPS).sqrt()  # type: ignore[union-attr]
            for q, a, n in parts:
                if q is p:
                    grad[a : a + n] += rows(q)[a : a + n] / norms[:, None]
        return strength * grad.reshape(p.shape)

    params = {id(p): p for parts in slices for p, _, _ in parts}
    handles = [p.register_hook(lambda g, p=p: g + extra(p)) for p in params.values()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
