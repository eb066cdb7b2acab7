"""Calibration statistics for compression without retraining (see :mod:`.no_retrain`).

One pass over a few thousand model inputs records, per layer, the input-feature
variances (and covariance), the mean output and the Fisher information of each output.
The inputs go through in chunks and the statistics are sums, so memory does not grow with
their number (LeNet-5's conv2 unfolds each image into 64 rows of 500 columns).
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


CHUNK = 256  # calibration inputs per forward pass


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


@dataclass
class _Sums:
    """Running sums of one layer's statistics over the chunks (float64)."""

    rows: int = 0  # input rows seen (samples x positions; elements for a scalar variance)
    s1: np.ndarray | None = None  # (columns,) sum of the rows, or (1,) of the elements
    s2: np.ndarray | None = None  # (columns,) sum of squares, or (columns, columns) X^T X
    scalar: bool = False  # the input is not unfolded: one variance for every column
    out_rows: int = 0
    out_sum: torch.Tensor | None = None  # (out_channels,)
    fisher: torch.Tensor | None = None  # (out_channels,) sum over samples

    def add_input(self, layer: nn.Module, x: torch.Tensor, covariance: bool) -> None:
        cols = _columns(layer, x)
        if cols is None:  # see finish: the variance of the whole input
            self.scalar, cols = True, x.reshape(-1, 1)
        cols = cols.double()
        s1 = cols.sum(0).numpy()
        s2 = (cols.T @ cols).numpy() if covariance and not self.scalar else (
            cols.pow(2).sum(0).numpy())  # fmt: skip
        self.rows += cols.shape[0]
        self.s1 = s1 if self.s1 is None else self.s1 + s1
        self.s2 = s2 if self.s2 is None else self.s2 + s2

    def add_output(self, out: torch.Tensor) -> None:
        y = _channels_last(out.detach()).double()
        self.out_rows += y.shape[0] * y.shape[1]
        total = y.sum((0, 1))
        self.out_sum = total if self.out_sum is None else self.out_sum + total

    def finish(self, layer: nn.Module, inputs: bool, covariance: bool, samples: int) -> _Stats:
        """Means, variances and covariance from the sums. A layer whose input is not
        unfolded gets every column the variance of its whole input and a diagonal
        covariance: the same scale as the others, so one ``lam`` still serves the
        network, without per-feature detail."""
        var, cov = np.zeros(0), None
        if inputs:
            assert self.s1 is not None and self.s2 is not None
            n = max(self.rows, 1)
            mean = self.s1 / n
            if self.scalar:
                v = max(float(self.s2.sum() / n - mean[0] ** 2), 0.0)
                var = np.full(layer.weight[0].numel(), v)
                cov = np.diag(var) if covariance else None
            elif covariance:
                cov = self.s2 / n - np.outer(mean, mean)
                var = np.clip(np.diag(cov).copy(), 0, None)
            else:
                var = np.clip(self.s2 / n - mean**2, 0, None)
        assert self.out_sum is not None
        fisher = np.zeros(0) if self.fisher is None else (self.fisher / max(samples, 1)).numpy()
        return _Stats(var, self.out_sum / max(self.out_rows, 1), fisher, cov)


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
    covariance: bool = False,
    chunk: int = CHUNK,
    outputs: list[torch.Tensor] | None = None,
) -> dict[str, _Stats]:
    """One pass over ``calibration``, ``chunk`` inputs at a time, recording per layer
    input variances (if ``inputs``; with ``covariance`` the covariance too), output means
    and (if ``fisher``) the Fisher information of each output. With ``outputs`` (a list),
    the model's outputs of each chunk are appended to it too (float64), from the same pass.

    The Fisher information is an expectation over the model's own predictive
    distribution: the true Fisher, so no labels are needed.
    """
    layers = prunable_layers(model)
    sums = {name: _Sums() for name in names}
    grads: dict[str, torch.Tensor] = {}
    handles = []

    def hook(name: str) -> Callable[..., None]:
        def run(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            with torch.no_grad():
                if inputs:
                    sums[name].add_input(module, args[0].detach(), covariance)
                sums[name].add_output(out)
            if fisher:
                out.register_hook(lambda g: grads.__setitem__(name, g.detach()))

        return run

    for name in names:
        handles.append(layers[name].register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, calibration.shape[0], chunk):
            batch = calibration[start : start + chunk]
            if fisher:
                out = _fisher_pass(model, batch, names, sums, grads)
            else:
                with torch.no_grad():
                    out = model(batch)
            if outputs is not None:
                outputs.append(out.detach().double())
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    n = calibration.shape[0]
    return {name: sums[name].finish(layers[name], inputs, covariance, n) for name in names}


def _fisher_pass(
    model: nn.Module,
    batch: torch.Tensor,
    names: Sequence[str],
    sums: dict[str, _Sums],
    grads: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Add one chunk's Fisher information to ``sums`` and return the chunk's outputs.

    Exactly, as an expectation over the model's own class probabilities ``p_k``: one
    backward pass per class ``k`` of ``sum_n sqrt(p_nk) CE(logits_n, k)``, whose squared
    per-sample gradients sum to ``sum_k p_nk (dCE_k/dy)^2``. The loss is summed over
    samples, so the gradient at a sample's output is that sample's own."""
    with torch.enable_grad():
        logits = model(batch)
        probs = torch.softmax(logits.detach(), 1)
        params = [p for p in model.parameters() if p.requires_grad]
        for k in range(logits.shape[1]):
            labels = torch.full((logits.shape[0],), k, dtype=torch.long)
            ce = nn.functional.cross_entropy(logits, labels, reduction="none")
            loss = (probs[:, k].sqrt() * ce).sum()
            torch.autograd.grad(loss, params or [logits], retain_graph=True, allow_unused=True)
            for name in names:
                g = _channels_last(grads[name].double())  # (N, positions, C)
                # A weight's per-sample gradient sums over positions.
                total = g.pow(2).sum(1).sum(0)
                f = sums[name].fisher
                sums[name].fisher = total if f is None else f + total
    return logits
