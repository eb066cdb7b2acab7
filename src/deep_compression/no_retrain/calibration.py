"""Calibration statistics for compression without retraining (see :mod:`.no_retrain`).

One pass over a few hundred model inputs records, per layer, the input-feature variances
(and covariance), the mean output and the Fisher information of each output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from deep_compression.prune import prunable_layers


@dataclass
class _Stats:
    """Per-layer statistics gathered from one pass over the calibration inputs."""

    in_var: np.ndarray  # (columns,) variance of each input feature / unfolded column
    out_mean: torch.Tensor  # (out_channels,) mean output
    out_fisher: np.ndarray  # (out_channels,) E[(dL/dy_o)^2] per sample (empty if not asked)
    in_cov: np.ndarray | None = None  # (columns, columns) input covariance (if asked)


def _columns(layer: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """The layer's input as a ``(samples, columns)`` matrix whose columns match the
    flattened weight's inner dimensions (``in`` or ``in * kh * kw``); None for a layer
    whose input is not unfolded here (grouped or depthwise, 1-d or 3-d convolutions)."""
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    if isinstance(layer, nn.Conv2d) and layer.groups == 1:
        cols = nn.functional.unfold(
            x,
            layer.kernel_size,
            dilation=layer.dilation,
            padding=layer.padding,
            stride=layer.stride,
        )  # (N, C*kh*kw, L)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return None


def _input_stats(
    layer: nn.Module, x: torch.Tensor, covariance: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(variance of each column, covariance or None)`` of the layer's input. A layer
    whose input is not unfolded (see :func:`_columns`) gets every column the variance of
    its whole input and a diagonal covariance: the same scale as the others, so one
    ``lam`` still serves the network, without per-feature detail."""
    cols = _columns(layer, x)
    if cols is None:
        n = layer.weight[0].numel()  # columns of the flattened weight
        var = np.full(n, float(x.double().var(unbiased=False)))
        return var, (np.diag(var) if covariance else None)
    cols = cols.double()
    var = cols.var(0, unbiased=False).numpy()
    if not covariance:
        return var, None
    centred = cols - cols.mean(0)
    return var, (centred.T @ centred / max(1, cols.shape[0])).numpy()


def _channels_last(y: torch.Tensor) -> torch.Tensor:
    """``(N, C, ...)`` conv outputs or ``(N, C)`` linear outputs as ``(N, positions, C)``."""
    if y.ndim > 2:
        return y.flatten(2).transpose(1, 2)
    return y.reshape(y.shape[0], -1, y.shape[-1])


def _gather(
    model: nn.Module,
    calibration: torch.Tensor,
    names: Sequence[str],
    inputs: bool,
    fisher: bool = False,
    seed: int = 0,
    covariance: bool = False,
) -> dict[str, _Stats]:
    """One pass over ``calibration`` recording, per layer, input variances (if
    ``inputs``), output means and (if ``fisher``) the Fisher information of each output.

    The Fisher information uses labels *sampled from the model's own softmax* (seeded):
    the true Fisher, so no labels are needed. The loss is summed over samples, so the
    gradient at a sample's output is that sample's own.
    """
    layers = prunable_layers(model)
    stats: dict[str, _Stats] = {}
    grads: dict[str, torch.Tensor] = {}
    handles = []

    def hook(name: str) -> Callable[..., None]:
        def run(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            with torch.no_grad():
                var, cov = np.zeros(0), None
                if inputs:
                    var, cov = _input_stats(module, args[0].detach(), covariance)
                mean = _channels_last(out.detach()).double().mean((0, 1))
            stats[name] = _Stats(var, mean, np.zeros(0), cov)
            if fisher:
                out.register_hook(lambda g: grads.__setitem__(name, g.detach()))

        return run

    for name in names:
        handles.append(layers[name].register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        if fisher:
            # The Fisher information exactly, as an expectation over the model's own
            # class probabilities p_k (no labels needed): one backward pass per class k of
            # sum_n sqrt(p_nk) CE(logits_n, k), whose squared per-sample gradients sum to
            # sum_k p_nk (dCE_k/dy)^2.
            with torch.enable_grad():
                logits = model(calibration)
                probs = torch.softmax(logits.detach(), 1)
                params = [p for p in model.parameters() if p.requires_grad]
                acc = {name: 0.0 for name in names}
                for k in range(logits.shape[1]):
                    labels = torch.full((logits.shape[0],), k, dtype=torch.long)
                    ce = nn.functional.cross_entropy(logits, labels, reduction="none")
                    loss = (probs[:, k].sqrt() * ce).sum()
                    torch.autograd.grad(
                        loss, params or [logits], retain_graph=True, allow_unused=True
                    )
                    for name in names:
                        g = _channels_last(grads[name].double())  # (N, positions, C)
                        # A weight's per-sample gradient sums over positions.
                        acc[name] = acc[name] + g.pow(2).sum(1).mean(0)
            for name in names:
                stats[name].out_fisher = acc[name].numpy()
        else:
            with torch.no_grad():
                model(calibration)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return stats
