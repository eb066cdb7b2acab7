"""Calibration statistics for compression without retraining (see :mod:`.no_retrain`).

One pass over a few thousand model inputs records, per layer, the input-feature
variances (and covariance), the mean output and the Fisher information of each output.
The inputs go through in chunks and the statistics are sums, so memory does not grow with
their number (LeNet-5's conv2 unfolds each image into 64 rows of 500 columns).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from deep_compression.prune import prunable_layers
from deep_compression.quantize.rdq import Factors


@dataclass
class LayerStats:
    """Per-layer statistics gathered from one pass over the calibration inputs."""

    in_var: np.ndarray  # (columns,) variance of each input feature / unfolded column
    out_mean: torch.Tensor  # (out_channels,) mean output
    out_fisher: np.ndarray  # (out_channels,) E[(dL/dy_o)^2] per sample (empty if not asked)
    in_cov: np.ndarray | None = None  # (columns, columns) input covariance (if asked)
    # GPTQ's factorisations of H (a multiple of ``in_cov``), kept with the statistics a
    # search reuses: they do not depend on lam (see rd_gptq's ``factors``).
    factors: Factors = field(default_factory=dict, repr=False, compare=False)


CHUNK = 256  # calibration inputs per forward pass
# The most bytes of output-layer inputs a Head keeps (a classifier's head on 2,048 inputs:
# 0.5 MB; the last convolution of a segmentation network would not fit).
HEAD_BYTES = 256 << 20


@dataclass
class Head:
    """The layer whose output the model returns as it is (a classifier's last Linear), and
    its input on each calibration chunk, as :func:`gather_stats` found them in one pass.

    After a change to that layer's bias alone, :func:`head_pass` re-runs that layer on
    these inputs: the very outputs a whole pass would give, for the cost of one layer.
    ``name`` is None when no such layer was found in every chunk (a layer called twice,
    an output computed after it, a tuple returned) or its inputs would exceed
    :data:`HEAD_BYTES`.
    """

    name: str | None = None
    inputs: list[torch.Tensor] = field(default_factory=list)
    found: bool = True  # no chunk has contradicted ``name`` yet

    def record(self, last: list, calls: dict[str, int], out: object) -> None:
        """One chunk: ``last`` is ``[name, input, output]`` of the last hooked layer to
        run, ``calls`` how often each ran, ``out`` what the model returned."""
        name = last[0] if last and last[2] is out and calls[last[0]] == 1 else None
        if not self.found or name is None or self.name not in (None, name):
            self.found, self.name = False, None
            self.inputs.clear()
            return
        self.name = name
        self.inputs.append(last[1].detach().clone())
        if sum(x.nbytes for x in self.inputs) > HEAD_BYTES:
            self.record([], {}, None)


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
        if covariance and not self.scalar:
            s2 = (cols.T @ cols).numpy()
        else:
            s2 = cols.pow(2).sum(0).numpy()
        self.rows += cols.shape[0]
        self.s1 = s1 if self.s1 is None else self.s1 + s1
        self.s2 = s2 if self.s2 is None else self.s2 + s2

    def add_output(self, out: torch.Tensor) -> None:
        y = _channels_last(out.detach()).double()
        self.out_rows += y.shape[0] * y.shape[1]
        total = y.sum((0, 1))
        self.out_sum = total if self.out_sum is None else self.out_sum + total

    def finish(self, layer: nn.Module, inputs: bool, covariance: bool, samples: int) -> LayerStats:
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
        return LayerStats(var, self.out_sum / max(self.out_rows, 1), fisher, cov)


def _channels_last(y: torch.Tensor) -> torch.Tensor:
    """``(N, C, ...)`` conv outputs or ``(N, C)`` linear outputs as ``(N, positions, C)``."""
    if y.ndim > 2:
        return y.flatten(2).transpose(1, 2)
    return y.reshape(y.shape[0], -1, y.shape[-1])


def gather_stats(
    model: nn.Module,
    calibration: torch.Tensor,
    names: Sequence[str],
    inputs: bool,
    fisher: bool = False,
    covariance: bool = False,
    chunk: int = CHUNK,
    outputs: list[torch.Tensor] | None = None,
    head: Head | None = None,
) -> dict[str, LayerStats]:
    """One pass over ``calibration``, ``chunk`` inputs at a time, recording per layer
    input variances (if ``inputs``; with ``covariance`` the covariance too), output means
    and (if ``fisher``) the Fisher information of each output. With ``outputs`` (a list),
    the model's outputs of each chunk are appended to it too (float64), from the same pass.
    With ``head`` (an empty :class:`Head`), the layer among ``names`` whose output the
    model returns and its inputs are recorded in it.

    The Fisher information is an expectation over the model's own predictive
    distribution: the true Fisher, so no labels are needed.
    """
    layers = prunable_layers(model)
    sums = {name: _Sums() for name in names}
    outs: dict[str, torch.Tensor] = {}  # each layer's output in this chunk (for the Fisher)
    handles = []
    last: list = []  # [name, input, output] of the last hooked layer run (for ``head``)
    calls: dict[str, int] = {}

    def hook(name: str) -> Callable[..., None]:
        def run(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            if head is not None:
                last[:] = [name, args[0], out]
                calls[name] = calls.get(name, 0) + 1
            with torch.no_grad():
                if inputs:
                    sums[name].add_input(module, args[0].detach(), covariance)
                sums[name].add_output(out)
            if fisher:  # a layer called twice: its first output, as a tensor hook had it
                outs.setdefault(name, out)

        return run

    for name in names:
        handles.append(layers[name].register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, calibration.shape[0], chunk):
            batch = calibration[start : start + chunk]
            if fisher:
                outs.clear()
                out = _fisher_pass(model, batch, names, sums, outs)
            else:
                with torch.no_grad():
                    out = model(batch)
            if head is not None:
                head.record(last, calls, out)
                last.clear()
                calls.clear()
            if outputs is not None:
                outputs.append(out.detach().double())
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    n = calibration.shape[0]
    return {name: sums[name].finish(layers[name], inputs, covariance, n) for name in names}


@torch.no_grad()
def head_pass(layer: nn.Module, head: Head, samples: int) -> tuple[LayerStats, torch.Tensor]:
    """The ``head`` layer re-run on its recorded inputs: its statistics (as :func:`gather_stats`
    without ``inputs`` gives them) and the model's ``(samples, ...)`` outputs (float64)."""
    sums, outs = _Sums(), []
    for x in head.inputs:
        y = layer(x)
        sums.add_output(y)
        outs.append(y.detach().double())
    return sums.finish(layer, False, False, samples), torch.cat(outs)


def _fisher_pass(
    model: nn.Module,
    batch: torch.Tensor,
    names: Sequence[str],
    sums: dict[str, _Sums],
    outs: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Add one chunk's Fisher information to ``sums`` and return the chunk's outputs
    (``outs``: the layers' outputs, filled by the forward hooks).

    Exactly, as an expectation over the model's own class probabilities ``p_k``: one
    backward pass per class ``k`` of ``sum_n sqrt(p_nk) CE(logits_n, k)``, whose squared
    per-sample gradients sum to ``sum_k p_nk (dCE_k/dy)^2``. The loss is summed over
    samples, so the gradient at a sample's output is that sample's own.

    The gradients are taken with respect to the layers' outputs, not the parameters: the
    same values at those outputs, without the weight gradients nobody reads, and the
    backward pass stops at the first layer: ResNet-44's statistics (with the covariance)
    on 2,048 CIFAR-10 images took 275 CPU-seconds instead of 386."""
    frozen = not any(p.requires_grad for p in model.parameters())
    with torch.enable_grad():
        # Without trainable parameters nothing would carry a gradient to the outputs.
        logits = model(batch.detach().requires_grad_() if frozen else batch)
        probs = torch.softmax(logits.detach(), 1)
        targets = [outs[name] for name in names]
        for k in range(logits.shape[1]):
            labels = torch.full((logits.shape[0],), k, dtype=torch.long)
            ce = nn.functional.cross_entropy(logits, labels, reduction="none")
            loss = (probs[:, k].sqrt() * ce).sum()
            grads = torch.autograd.grad(loss, targets, retain_graph=True, allow_unused=True)
            for name, grad, out in zip(names, grads, targets):
                # An output the loss does not depend on carries no information.
                grad = torch.zeros_like(out) if grad is None else grad
                g = _channels_last(grad.double())  # (N, positions, C)
                # A weight's per-sample gradient sums over positions.
                total = g.pow(2).sum(1).sum(0)
                f = sums[name].fisher
                sums[name].fisher = total if f is None else f + total
    return logits
