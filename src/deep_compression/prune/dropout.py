"""Dropout during retraining of a pruned network (the paper's Section 3.1).

Pruning removes connections, so the dropout that regularised the dense layer is too
strong for the sparse one: the paper scales the rate as ``D_r = D_o * sqrt(C_r / C_o)``
with ``C`` the kept connections of the layer a dropout module follows.
:func:`dropout_inputs` finds which layer that is; :class:`DropoutScaler` applies the rule.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from deep_compression.prune.core import sparsity_report
from deep_compression.prune.mask import prunable_layers

__all__ = ["DROPOUT_TYPES", "dropout_inputs", "DropoutScaler"]

DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
)


@torch.no_grad()
def dropout_inputs(model: nn.Module, sample: torch.Tensor) -> dict[str, list[str]]:
    """For each dropout module, the prunable layers whose output it drops.

    Found by tracing one forward pass on ``sample``: a dropout module follows the last
    prunable layer called before it (``fc1 -> relu -> drop1`` gives ``drop1: [fc1]``). A
    module called several times collects every such layer. Modules never called, or
    called before any prunable layer, are left out.
    """
    last: list[str | None] = [None]
    follows: dict[str, list[str]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, DROPOUT_TYPES):

            def on_drop(_m: nn.Module, _a: object, name: str = name) -> None:
                if last[0] is not None and last[0] not in follows.setdefault(name, []):
                    follows[name].append(last[0])

            handles.append(module.register_forward_pre_hook(on_drop))
    for name, layer in prunable_layers(model).items():

        def on_layer(_m: nn.Module, _a: object, _o: object, name: str = name) -> None:
            last[0] = name

        handles.append(layer.register_forward_hook(on_layer))
    was_training = model.training
    model.eval()
    try:
        model(sample)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {k: v for k, v in follows.items() if v}


class DropoutScaler:
    """Scale dropout rates with the kept connections: ``D_r = D_o * sqrt(C_r / C_o)``.

    Built before pruning: it records each dropout module's rate ``D_o`` and the kept
    connections ``C_o`` of the layers it follows (found by tracing one forward pass, see
    :func:`~deep_compression.prune.core.dropout_inputs`). :meth:`update_` then sets the
    rates from the current masks.
    """

    def __init__(self, model: nn.Module, sample: torch.Tensor) -> None:
        modules = dict(model.named_modules())
        self.follows = dropout_inputs(model, sample)
        kept = {r.name: r.kept for r in sparsity_report(model).layers}
        self.base = {
            name: (float(modules[name].p), sum(kept[n] for n in layers))
            for name, layers in self.follows.items()
            if float(modules[name].p) > 0
        }

    def update_(self, model: nn.Module) -> dict[str, float]:
        """Set and return the new rate of every scaled dropout module."""
        modules = dict(model.named_modules())
        kept = {r.name: r.kept for r in sparsity_report(model).layers}
        rates = {}
        for name, (p0, c0) in self.base.items():
            c = sum(kept[n] for n in self.follows[name])
            rates[name] = p0 * math.sqrt(c / c0) if c0 else p0
            modules[name].p = rates[name]
        return rates
