"""Trained quantization of a whole model: cluster, share, report, strip.

``quantize_(model, config)`` replaces each ``Linear``/``ConvNd`` weight by
``codebook[indices] * mask`` (a :class:`QuantizedWeight` parametrization): per layer, never
across layers, 1-D k-means with ``k = 2**bits`` runs on the *surviving* weights only.
Pruned positions are not clustered, are not a cluster of the codebook, and stay exactly
zero through the mask (their index is 0 by convention). A layer that was never pruned gets
an all-True mask, which is the quantization-only mode.

After ``quantize_``, training the model (``train.fit``) trains the centroids: autograd
through the gather gives each centroid the sum of the gradients of the weights assigned
to it, the paper's update, while the assignments (buffers) stay fixed.
``strip_quantization_`` makes the shared weights permanent in plain layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from deep_compression.layer_config import check_patterns, layer_kinds, resolve
from deep_compression.progress import progress_bar
from deep_compression.prune.mask import PruningMask, get_mask, prunable_layers, unparametrize_
from deep_compression.quantize.config import DEFAULT_BITS, QuantizeConfig
from deep_compression.quantize.kmeans import kmeans_1d
from deep_compression.quantize.parametrization import QuantizedWeight, index_dtype
from deep_compression.table import format_table

__all__ = [
    "LayerQuantization",
    "QuantizationReport",
    "quantize_",
    "quantization_report",
    "strip_quantization_",
    "quantized_weight",
    "layer_bits",
]


@dataclass(frozen=True)
class LayerQuantization:
    """The state of one quantized layer.

    Attributes:
        name: qualified layer name.
        weights: entries of the weight tensor.
        kept: entries the mask keeps (all of them for an unpruned layer).
        nonzero: entries that are non-zero now (``kept`` unless a centroid is exactly 0).
        codebook_size: ``k``, the number of centroids (``2**bits`` or fewer).
        index_bits: bits of a cluster index, ``ceil(log2(k))`` (at least 1).
        distinct: distinct values among the kept weights now (at most ``k``).
        mse: mean squared difference between the kept weights now and the weights that
            were clustered (before quantization); includes the drift of fine-tuning.
        relative_error: the same difference as ``||w_q - w|| / ||w||`` over kept weights.
    """

    name: str
    weights: int
    kept: int
    nonzero: int
    codebook_size: int
    index_bits: int
    distinct: int
    mse: float
    relative_error: float


@dataclass(frozen=True)
class QuantizationReport:
    """Per-layer :class:`LayerQuantization` of a model, in module order."""

    layers: tuple[LayerQuantization, ...]

    def __getitem__(self, name: str) -> LayerQuantization:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-ready ``{layer: {field: value}}`` (for checkpoint metadata)."""
        return {q.name: {k: v for k, v in asdict(q).items() if k != "name"} for q in self.layers}

    def table(self, bits: dict[str, int] | None = None) -> str:
        """A Markdown table; ``bits`` (configured bits per layer) adds a column."""
        headers = ["layer", "weights", "non-zero", "codebook", "index bits", "distinct"]
        headers += ["MSE", "rel. error"]
        if bits is not None:
            headers.insert(3, "bits")
        rows = []
        for q in self.layers:
            row: list[object] = [q.name, q.weights, q.nonzero, q.codebook_size, q.index_bits]
            row += [q.distinct, f"{q.mse:.3g}", f"{100 * q.relative_error:.2f}%"]
            if bits is not None:
                row.insert(3, bits.get(q.name, "-"))
            rows.append(row)
        return format_table(headers, rows)


def quantized_weight(layer: nn.Module) -> QuantizedWeight | None:
    """The :class:`QuantizedWeight` parametrization of ``layer.weight``, or None."""
    if not parametrize.is_parametrized(layer, "weight"):
        return None
    for p in layer.parametrizations["weight"]:
        if isinstance(p, QuantizedWeight):
            return p
    return None


def _cluster_layer(
    weight: torch.Tensor, mask: torch.Tensor, bits: int, config: QuantizeConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codebook ``(k,)`` float32 and indices (weight's shape, ``index_dtype(2**bits)``)."""
    surviving = weight[mask].detach().cpu().double().numpy()  # (kept,)
    indices = torch.zeros(weight.shape, dtype=index_dtype(2**bits))
    if surviving.size == 0:
        # A fully pruned layer: one (unused) centroid so the codebook is never empty.
        return torch.zeros(1), indices
    centroids, labels = kmeans_1d(
        surviving,
        2**bits,
        init=config.init,
        max_iter=config.lloyd_iterations,
        seed=config.seed,
    )
    indices[mask.cpu()] = torch.from_numpy(labels).to(indices.dtype)
    return torch.from_numpy(centroids).float(), indices


def layer_bits(model: nn.Module, config: QuantizeConfig) -> dict[str, int]:
    """The bits of every ``Linear``/``ConvNd`` layer of ``model`` under ``config``.

    Raises:
        ConfigError: a ``bits`` key matches no layer (a typo such as ``"fc4"``). Layers
            no key matches get the paper's default (8 bits for convolutions, else 5).
    """
    layers = prunable_layers(model)
    check_patterns(config.bits, layers, "quantize.bits")
    kinds = layer_kinds(layers)
    out = {}
    for name in layers:
        conv = any(k.startswith("Conv") for k in kinds[name])
        default = DEFAULT_BITS["conv" if conv else "other"]
        out[name] = resolve({"*": default, **config.bits}, name, "quantize.bits", kinds[name])
    return out


def quantize_(
    model: nn.Module, config: QuantizeConfig | None = None, *, progress: bool = False
) -> QuantizationReport:
    """Share the weights of every ``Linear``/``ConvNd`` layer of ``model``, in place.

    For each layer: read the effective weight (already masked if pruned) and its mask,
    cluster the kept weights with ``k = 2**bits`` (bits from ``config.bits``), remove the
    previous parametrization (a pruning mask, or an earlier quantization) keeping its
    value, and register ``QuantizedWeight(codebook, indices, mask)``.

    Quantizing an already quantized layer re-clusters it cleanly: its current shared
    weights (``codebook[indices] * mask``) and its mask are the input, exactly as for a
    pruned layer, so a model can be re-quantized to fewer bits.

    The layer's float weight is kept by torch's parametrize machinery as
    ``parametrizations.weight.original``: it holds the weights that were clustered (the
    report measures the quantization error against them) and is frozen.

    Args:
        model: a (possibly pruned or quantized) model; modified in place.
        config: bits per layer, initialisation, Lloyd iterations (default
            :class:`QuantizeConfig`); ``config.finetune`` is not used here.
        progress: a progress bar (or log lines) over the layers.

    Returns:
        The report of every quantized layer just after clustering.

    Raises:
        ConfigError: a ``bits`` key matches no layer, or a layer has no bits.
    """
    config = config or QuantizeConfig()
    layers = prunable_layers(model)
    plan = layer_bits(model, config)
    bar = progress_bar(layers.items(), desc="k-means", enabled=progress, unit="layer")
    for name, layer in bar:
        with torch.no_grad():
            weight = layer.weight.detach()  # effective: original * mask if pruned
        mask = get_mask(layer)
        mask = torch.ones_like(weight, dtype=torch.bool) if mask is None else mask.clone()
        # Cluster before touching the layer, so a failure leaves it as it was.
        codebook, indices = _cluster_layer(weight, mask, plan[name], config)
        if parametrize.is_parametrized(layer, "weight"):
            # Bakes the effective weight into a plain parameter, which becomes
            # ``original`` of the new parametrization below.
            unparametrize_(layer, weight)
        # unsafe: the parametrization ignores its input, so torch's consistency check
        # (which calls it on the current weight) has nothing to verify.
        parametrize.register_parametrization(
            layer,
            "weight",
            QuantizedWeight(codebook.to(weight.device), indices.to(weight.device), mask),
            unsafe=True,
        )
        # The forward pass ignores ``original``, so it would never get a gradient anyway;
        # freezing it keeps it out of the optimizer (no momentum or Adam state the size of
        # the layer, no weight decay) and leaves the codebook (and the bias) the only
        # trainable tensors of the layer.
        layer.parametrizations["weight"].original.requires_grad_(False)
    return quantization_report(model)


_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


@torch.no_grad()
def round_float16_(model: nn.Module) -> int:
    """Round to float16 values, in place: the codebook and the bias of every quantized
    layer, and the parameters and running statistics of every normalisation layer
    (BatchNorm, LayerNorm, GroupNorm: stored dense in the file).

    The tensors stay float32; their values become exactly representable in binary16, which
    the ``.dcz`` writer then stores in 2 bytes each without loss. The relative change of
    each value is at most 2^-11 (binary16's rounding error), far below what quantization
    itself changes.

    Returns:
        The number of values changed.
    """
    tensors: list[torch.Tensor] = []
    for layer in prunable_layers(model).values():
        q = quantized_weight(layer)
        if q is None:
            continue
        tensors += [q.codebook] + ([layer.bias] if getattr(layer, "bias", None) is not None else [])
    for m in model.modules():
        if isinstance(m, _NORM_TYPES):
            tensors += [
                t
                for t in (*m.parameters(recurse=False), *m.buffers(recurse=False))
                if t.is_floating_point()
            ]
    changed = 0
    for t in tensors:
        rounded = t.to(torch.float16).to(t.dtype)
        changed += int((rounded != t).sum())
        t.copy_(rounded)
    return changed


@torch.no_grad()
def quantization_report(model: nn.Module) -> QuantizationReport:
    """Per-layer codebook size, distinct values and quantization error of ``model``.

    Only layers carrying a :class:`QuantizedWeight` are listed. Computed from the kept
    entries only (no gather over the whole weight), so it stays cheap on large layers.
    """
    rows = []
    for name, layer in prunable_layers(model).items():
        q = quantized_weight(layer)
        if q is None:
            continue
        k = q.codebook.numel()
        idx = q.indices[q.mask].long()  # (kept,)
        kept_now = q.codebook.detach().double()[idx]
        before = layer.parametrizations["weight"].original[q.mask].double()
        diff = kept_now - before
        used = torch.bincount(idx, minlength=k) > 0
        norm = float(before.norm())
        rows.append(
            LayerQuantization(
                name=name,
                weights=q.mask.numel(),
                kept=idx.numel(),
                nonzero=int((kept_now != 0).sum()),
                codebook_size=k,
                index_bits=max(1, math.ceil(math.log2(k))),
                distinct=int(torch.unique(q.codebook.detach()[used]).numel()),
                mse=float(diff.pow(2).mean()) if diff.numel() else 0.0,
                relative_error=float(diff.norm()) / norm if norm > 0 else 0.0,
            )
        )
    return QuantizationReport(tuple(rows))


def strip_quantization_(
    model: nn.Module, *, keep_mask: bool = False, layers: Sequence[str] | None = None
) -> nn.Module:
    """Make the shared weights permanent: plain trainable weights, in place.

    Each quantized layer's weight becomes an ordinary ``nn.Parameter`` holding
    ``codebook[indices] * mask``: the model then runs without the gather, and a
    ``state_dict`` has plain ``weight`` keys. Pruned positions are zeros of that weight.

    Args:
        model: a model quantized by :func:`quantize_`.
        keep_mask: re-register a :class:`~deep_compression.prune.PruningMask` on layers
            whose mask prunes something, so further training keeps their zeros.
        layers: only these layers (default: every quantized layer).

    Returns:
        ``model``.
    """
    for name, layer in prunable_layers(model).items():
        q = quantized_weight(layer)
        if q is None or (layers is not None and name not in layers):
            continue
        mask = q.mask.clone()
        unparametrize_(layer)
        # The original tensor was frozen by quantize_; a plain weight trains again.
        layer.weight.requires_grad_(True)
        if keep_mask and not bool(mask.all()):
            parametrize.register_parametrization(layer, "weight", PruningMask(mask))
    return model
