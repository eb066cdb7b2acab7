"""How much each layer's relative weight error moves the model's output, measured.

Why: the data-free importance (``"weights"``) charges every layer the same for the same
*relative* error, so one ``lam`` gives every layer the same trade of relative error for
bits. Measured on the published CIFAR-10 ResNet-44, the output's sensitivity to the same
relative error differs a hundredfold between layers (KL per squared relative error 0.013
for ``layer1.5.conv2``, 1.34 for ``conv1``; the first convolution of a block is 2-10x as
sensitive as the second), so a single relative trade spends bits where they do not matter.
Importance ``"measured"`` multiplies each layer's relative distortion by its sensitivity
``a_l`` measured here: ``lam`` is then in units of output divergence per bit, and the
rate is allocated across layers by each layer's effect on the output.

The measurement, per layer ``l`` on its own: add Gaussian noise ``E`` with
``||E|| = r ||W_l||`` to the weight, run the calibration inputs, and take
``a_l = D(dense outputs, noisy outputs) / r^2`` with ``D`` the divergence of
:func:`output_divergence` (mean KL of the softmax outputs for a classifier).
For small ``r`` the divergence is quadratic in the error (its gradient at the dense model
is zero), so ``a_l`` does not depend on ``r``; ``r = 0.1`` is the size of the relative
errors a compressed ResNet's layers carry (0.03-0.15). One forward pass per layer: on
ResNet-44 with 512 images, 45 passes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from deep_compression.errors import ConfigError

__all__ = [
    "output_divergence",
    "SENSITIVITY_IMAGES",
    "SENSITIVITY_NOISE",
    "layer_sensitivity",
    "sensitivity_weights",
]

# Calibration inputs the measurement runs on: the divergence is a mean over images, and
# 512 of them gave every ResNet-44 layer's sensitivity (a mean of per-image divergences)
# to within a few percent while costing a quarter of a pass over 2,048.
SENSITIVITY_IMAGES = 512
SENSITIVITY_NOISE = 0.1  # relative size of the noise, ||E|| / ||W||
_CHUNK = 256  # inputs per forward pass


def output_divergence(reference: torch.Tensor, outputs: torch.Tensor) -> float:
    """How far ``outputs`` are from ``reference`` (both ``(N, ...)``): for class scores
    ``(N, C)`` the mean KL divergence ``KL(softmax(reference) || softmax(outputs))``
    (what a classifier's loss sees); otherwise the mean squared difference."""
    if reference.ndim == 2 and reference.shape[1] > 1:
        ref = torch.log_softmax(reference.double(), 1)
        out = torch.log_softmax(outputs.double(), 1)
        return float((ref.exp() * (ref - out)).sum(1).mean())
    return float((reference.double() - outputs.double()).pow(2).mean())


@torch.no_grad()
def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(x[i : i + _CHUNK]) for i in range(0, x.shape[0], _CHUNK)])


@torch.no_grad()
def layer_sensitivity(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    calibration: torch.Tensor,
    *,
    images: int = SENSITIVITY_IMAGES,
    noise: float = SENSITIVITY_NOISE,
    seed: int = 0,
) -> dict[str, float]:
    """``{name: a_l}``: the output divergence per squared relative error of each layer.

    Args:
        model: the dense model (left as it was: each weight is restored exactly).
        layers: the layers to measure, ``{name: module with a .weight}``.
        calibration: ``(N, ...)`` model inputs; the first ``images`` of them are used.
        images: how many inputs to run (all if fewer).
        noise: the relative size ``r`` of the noise (module docstring), in ``(0, 1]``.
        seed: the noise's seed (the result is deterministic).

    Returns:
        ``{name: float >= 0}`` in the order of ``layers``; 0 for a layer with all-zero
        weights (nothing to perturb).

    Raises:
        ConfigError: ``noise`` outside ``(0, 1]``, ``images < 1`` or no inputs.
    """
    if not (isinstance(noise, int | float) and 0 < noise <= 1):
        raise ConfigError(f"sensitivity noise must be in (0, 1], got {noise!r}")
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ConfigError(f"sensitivity images must be an integer >= 1, got {images!r}")
    if calibration.shape[0] == 0:
        raise ConfigError("layer sensitivity needs at least one calibration input")
    x = calibration[:images]
    was_training = model.training
    model.eval()
    try:
        reference = _outputs(model, x)
        gen = torch.Generator().manual_seed(seed)
        out: dict[str, float] = {}
        for name, layer in layers.items():
            out[name] = _one_layer(model, layer.weight, x, reference, noise, gen)
    finally:
        model.train(was_training)
    return out


def _one_layer(
    model: nn.Module,
    weight: torch.Tensor,
    x: torch.Tensor,
    reference: torch.Tensor,
    noise: float,
    gen: torch.Generator,
) -> float:
    """``a_l`` of the layer owning ``weight`` (restored bit for bit afterwards)."""
    before = weight.detach().clone()
    norm = float(before.double().norm())
    # The noise is drawn even for a zero layer, so every layer after it sees the same
    # draws whichever layers are zero.
    e = torch.randn(before.shape, generator=gen, dtype=torch.float64)
    if norm == 0.0:
        return 0.0
    e *= noise * norm / float(e.norm())
    try:
        weight.copy_((before.double() + e.to(before.device)).to(before.dtype))
        d = output_divergence(reference, _outputs(model, x))
    finally:
        weight.copy_(before)
    return max(d, 0.0) / noise**2


def sensitivity_weights(sensitivity: Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
    """The layer weights of importance ``"measured"``: ``a_l`` per name (a layer whose
    sensitivity is 0 gets the smallest positive one, so its weights still cost a little
    distortion and the quantizer stays well-defined)."""
    positive = [v for v in sensitivity.values() if v > 0]
    floor = min(positive) if positive else 1.0
    return {n: sensitivity[n] if sensitivity[n] > 0 else floor for n in names}
