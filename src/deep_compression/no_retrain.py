"""Compression without retraining: rate-distortion quantization of a trained model.

For users who cannot retrain (no training data or no budget), :func:`rd_quantize_` turns
every ``Linear``/``ConvNd`` weight into ``codebook[indices] * mask`` with the
entropy-constrained quantizer of :mod:`deep_compression.quantize.rdq`: sparsity and the
codebook size of each layer come out of one trade-off, ``distortion + lam * bits``, under
the ``.dcz`` file's rate model. It installs the project's
:class:`~deep_compression.quantize.QuantizedWeight` parametrizations, so
:func:`deep_compression.encode.encode_model` writes the result unchanged.

Distortion is measured per layer *relative to the layer*, so one ``lam`` serves a whole
network:

* without data, layer ``l``'s weight ``i`` has importance ``1 / ||W_l||^2``: the squared
  error of a layer counts as a fraction of the layer's energy (the relative error of its
  output for white inputs);
* with calibration inputs (a few hundred training samples), weight ``(o, j)`` has
  importance ``s_j / sum_{o', j'} W_{o'j'}^2 s_{j'}`` with ``s_j`` the variance of the
  layer's input feature ``j`` (for a convolution, column ``j`` of the unfolded input):
  the diagonal of the Hessian of the layer's output error, as in OBS/GPTQ, relative to the
  output energy. The variance (not the second moment) because the bias correction below
  removes the mean of the output error; an input that never varies (MNIST's border
  pixels) then costs nothing to zero.

Bias correction (calibration only; Nagel et al. 2019 "Data-free quantization", here with
data): after quantization, layer by layer in order, each bias absorbs the shift of the
mean of its layer's output between the dense model and the quantized one (inputs from the
quantized layers before it). Biases are stored densely in the file, so this costs nothing.

:func:`compress_without_retraining` searches ``lam`` for the smallest file whose validation
error stays within a budget of the dense model's, sizing every candidate by encoding it
to bytes in memory.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from deep_compression.dcz import CODER_CHOICES, to_bytes
from deep_compression.encode import file_metadata, model_tensors
from deep_compression.errors import ConfigError
from deep_compression.layer_config import check_patterns, resolve
from deep_compression.prune import prunable_layers
from deep_compression.prune.mask import unparametrize_
from deep_compression.quantize.core import round_float16_
from deep_compression.quantize.parametrization import QuantizedWeight, index_dtype
from deep_compression.quantize.rdq import MAX_CODEWORDS, rd_gptq, rd_quantize

__all__ = [
    "IMPORTANCES",
    "NoRetrainConfig",
    "SEARCH_START",
    "resolve_importance",
    "LayerRD",
    "RDReport",
    "Trial",
    "NoRetrainResult",
    "rd_quantize_",
    "encoded_size",
    "compress_without_retraining",
]

IMPORTANCES = ("auto", "weights", "inputs", "fisher", "gptq", "gptq-fisher")

# What importance = "auto" means with calibration inputs: measured (benchmarks/no_retrain.py)
# within 0.1 points of the dense test error, gptq-fisher was the smaller file on LeNet-5
# (72.0 KB vs 89-108 KB for gptq, whose compensation ran away on fc1) and within 5% of
# gptq on LeNet-300-100.
AUTO_CALIBRATED = "gptq-fisher"

# Where the search starts, per importance (the scale of lam differs: relative error per
# bit for weights/inputs/gptq, loss per bit for the Fisher ones). Measured on the dense
# LeNets: files within 0.1 points of the dense error sit at lam ~ 1e-7 (weights, gptq),
# 3e-7 (inputs), 3e-9 (gptq-fisher), 1e-9 (fisher).
SEARCH_START = MappingProxyType(
    {"weights": 1e-7, "inputs": 3e-7, "fisher": 1e-9, "gptq": 1e-7, "gptq-fisher": 3e-9}
)


def _positive(value: object, where: str, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        need = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{where} must be a finite number {need}, got {value!r}")
    return float(value)


def _int(value: object, where: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{where} must be an integer in {low}..{high}, got {value!r}")


@dataclass(frozen=True)
class NoRetrainConfig:
    """Settings of :func:`rd_quantize_`.

    Attributes:
        lam: Lagrange multiplier: relative squared error (fraction of a layer's energy,
            see the module docstring) traded per bit. Larger means smaller files.
        importance: how the distortion of a weight is weighted (module docstring):
            ``"weights"`` (data-free, each layer's error relative to its energy),
            ``"inputs"`` (input-feature variances, relative to the output energy),
            ``"fisher"`` (input variances times the Fisher information of each output,
            in loss units), ``"gptq"`` (the full input covariance, relative to the output
            energy, with GPTQ/OBS error compensation: :func:`rdq.rd_gptq`), or
            ``"auto"``: ``"gptq-fisher"`` with calibration inputs, else ``"weights"``.
            ``"inputs"``, ``"fisher"`` and ``"gptq"`` need calibration inputs.
        layer_weights: per-layer multiplier of the distortion, ``{"*": 1.0, "fc3": 4.0}``
            (a larger weight quantizes that layer more finely).
        bias_correction: with calibration inputs, correct each bias for the mean shift
            of its layer's output (ignored without calibration).
        float16: round codebooks and biases to float16 values, which the file then stores
            in 2 bytes (relative change <= 2^-11).
        max_codewords: at most this many codewords per layer in the initial grid.
        max_iter: at most this many Lloyd iterations per layer.
        max_groups: importance groups per layer (see ``rdq._groups``).
    """

    lam: float = 1e-7
    importance: str = "auto"
    layer_weights: Mapping[str, float] = field(default_factory=lambda: {"*": 1.0})
    bias_correction: bool = True
    float16: bool = True
    max_codewords: int = 256
    max_iter: int = 100
    max_groups: int = 64

    def __post_init__(self) -> None:
        _positive(self.lam, "no_retrain.lam", allow_zero=False)
        if not isinstance(self.layer_weights, Mapping) or "*" not in self.layer_weights:
            raise ConfigError(
                "no_retrain.layer_weights must be a table with a '*' default, "
                f"got {self.layer_weights!r}"
            )
        for key, value in self.layer_weights.items():
            if not isinstance(key, str) or not key:
                raise ConfigError(
                    f"no_retrain.layer_weights: keys must be layer names, got {key!r}"
                )
            _positive(value, f"no_retrain.layer_weights[{key!r}]")
        object.__setattr__(self, "layer_weights", MappingProxyType(dict(self.layer_weights)))
        for name in ("bias_correction", "float16"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"no_retrain.{name} must be true or false, got {getattr(self, name)!r}"
                )
        if self.importance not in IMPORTANCES:
            raise ConfigError(
                f"no_retrain.importance must be one of {', '.join(IMPORTANCES)}, "
                f"got {self.importance!r}"
            )
        _int(self.max_codewords, "no_retrain.max_codewords", 2, MAX_CODEWORDS)
        _int(self.max_iter, "no_retrain.max_iter", 1, 100_000)
        _int(self.max_groups, "no_retrain.max_groups", 1, 4096)

    def __hash__(self) -> int:
        items = tuple(sorted(self.layer_weights.items()))
        return hash(
            (
                self.lam,
                self.importance,
                items,
                self.bias_correction,
                self.float16,
                self.max_codewords,
                self.max_iter,
                self.max_groups,
            )
        )

    def with_lam(self, lam: float) -> NoRetrainConfig:
        """The same settings with another ``lam``."""
        return NoRetrainConfig(
            lam,
            self.importance,
            dict(self.layer_weights),
            self.bias_correction,
            self.float16,
            self.max_codewords,
            self.max_iter,
            self.max_groups,
        )


@dataclass(frozen=True)
class LayerRD:
    """One layer after :func:`rd_quantize_`.

    Attributes:
        name: layer name.
        weights: entries of the weight.
        kept: non-zero entries.
        codebook_size: non-zero codewords.
        model_bits: the rate model of :func:`rdq.model_bits` (positions + indices +
            codebook), an estimate of what the file spends on this weight.
        relative_error: ``||W_q - W|| / ||W||``.
        iterations: Lloyd iterations.
    """

    name: str
    weights: int
    kept: int
    codebook_size: int
    model_bits: float
    relative_error: float
    iterations: int


@dataclass(frozen=True)
class RDReport:
    """Per-layer :class:`LayerRD`, in module order, and the time taken."""

    layers: tuple[LayerRD, ...]
    seconds: float

    @property
    def kept_fraction(self) -> float:
        total = sum(q.weights for q in self.layers)
        return sum(q.kept for q in self.layers) / total if total else 1.0

    @property
    def model_bytes(self) -> float:
        return sum(q.model_bits for q in self.layers) / 8


# ----------------------------------------------------------------------- calibration


@dataclass
class _Stats:
    """Per-layer statistics gathered from one pass over the calibration inputs."""

    in_var: np.ndarray  # (columns,) variance of each input feature / unfolded column
    out_mean: torch.Tensor  # (out_channels,) mean output
    out_fisher: np.ndarray  # (out_channels,) E[(dL/dy_o)^2] per sample (empty if not asked)
    in_cov: np.ndarray | None = None  # (columns, columns) input covariance (if asked)


def _columns(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as a ``(samples, columns)`` matrix whose columns match the
    flattened weight's inner dimensions (``in`` or ``in * kh * kw``)."""
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
    raise ConfigError(
        f"calibration supports Linear and ungrouped Conv2d layers, got {type(layer).__name__}"
    )


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
                    cols = _columns(module, args[0].detach()).double()
                    var = cols.var(0, unbiased=False).numpy()
                    if covariance:
                        centred = cols - cols.mean(0)
                        cov = (centred.T @ centred / max(1, cols.shape[0])).numpy()
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


# ----------------------------------------------------------------------- quantize


def _importance(
    weight: np.ndarray, stats: _Stats | None, mode: str, layer_weight: float
) -> float | np.ndarray:
    """Per-weight importance: a scalar or ``(numel,)`` (module docstring)."""
    w2 = weight.reshape(weight.shape[0], -1) ** 2  # (out, columns)
    if mode == "weights":
        energy = float(w2.sum())
        return layer_weight / energy if energy > 0 else layer_weight
    assert stats is not None
    if stats.in_var.size != w2.shape[1]:
        raise AssertionError("calibration columns do not match the weight")
    if mode == "inputs":
        energy = float((w2 @ stats.in_var).sum())
        if energy <= 0:  # no input variance at all: every weight is free
            return np.zeros(weight.size)
        h = np.outer(np.ones(w2.shape[0]), stats.in_var * (layer_weight / energy))
    else:  # fisher: diagonal of the Kronecker-factored Fisher, in loss units
        h = np.outer(stats.out_fisher, stats.in_var) * (layer_weight / 2)
    return h.reshape(-1)


def _install(
    layer: nn.Module,
    codebook: np.ndarray,
    indices: np.ndarray,
    mask: np.ndarray,
    shape: tuple[int, ...],
) -> None:
    """Register ``QuantizedWeight(codebook, indices, mask)`` on ``layer.weight``."""
    weight = layer.weight.detach()
    if codebook.size == 0:  # every weight went to zero: one unused centroid
        codebook = np.zeros(1)
    cb = torch.from_numpy(codebook.astype(np.float32))
    idx = torch.from_numpy(indices.reshape(shape)).to(index_dtype(cb.numel()))
    m = torch.from_numpy(mask.reshape(shape))
    if parametrize.is_parametrized(layer, "weight"):
        unparametrize_(layer, weight)
    q = QuantizedWeight(cb.to(weight.device), idx.to(weight.device), m.to(weight.device))
    parametrize.register_parametrization(layer, "weight", q, unsafe=True)
    layer.parametrizations["weight"].original.requires_grad_(False)


def resolve_importance(importance: str, calibrated: bool) -> str:
    """The importance ``"auto"`` stands for, checked against the data available.

    Raises:
        ConfigError: a data-driven importance without calibration inputs.
    """
    mode = importance
    if mode == "auto":
        mode = AUTO_CALIBRATED if calibrated else "weights"
    if mode != "weights" and not calibrated:
        raise ConfigError(f"no_retrain.importance = {mode!r} needs calibration inputs")
    return mode


def rd_quantize_(
    model: nn.Module,
    config: NoRetrainConfig | None = None,
    calibration: torch.Tensor | None = None,
) -> RDReport:
    """Rate-distortion quantize every ``Linear``/``ConvNd`` weight of ``model``, in place.

    Args:
        model: a trained (dense, pruned or quantized) model.
        config: :class:`NoRetrainConfig` (default settings if None).
        calibration: optional ``(N, ...)`` model inputs (a few hundred training samples,
            not the validation split) for the per-feature importance and the bias
            correction; None is the data-free mode.

    Returns:
        The per-layer :class:`RDReport`.

    Raises:
        ConfigError: a ``layer_weights`` key matches no layer, or calibration with a
            layer type it does not support.
    """
    t0 = time.perf_counter()
    config = config or NoRetrainConfig()
    layers = prunable_layers(model)
    check_patterns(config.layer_weights, layers, "no_retrain.layer_weights")
    use_data = calibration is not None
    mode = resolve_importance(config.importance, use_data)
    dense_stats = (
        _gather(
            model,
            calibration,
            list(layers),
            True,
            fisher=mode in ("fisher", "gptq-fisher"),
            covariance=mode in ("gptq", "gptq-fisher"),
        )
        if use_data
        else {}
    )
    rows = []
    for name, layer in layers.items():
        with torch.no_grad():
            weight = layer.weight.detach().cpu().double().numpy()
        lw = float(resolve(config.layer_weights, name, "no_retrain.layer_weights"))
        if mode == "gptq":
            cov = dense_stats[name].in_cov
            assert cov is not None
            w2d = weight.reshape(weight.shape[0], -1)
            energy = float(((w2d @ cov) * w2d).sum())
            hess = cov * (lw / energy) if energy > 0 else cov
            r = rd_gptq(w2d, hess, config.lam, max_codewords=config.max_codewords)
        elif mode == "gptq-fisher":
            st = dense_stats[name]
            assert st.in_cov is not None
            w2d = weight.reshape(weight.shape[0], -1)
            # Loss units: 1/2 dW F dW with F ~ (output Fisher) x (input covariance).
            r = rd_gptq(
                w2d,
                st.in_cov * (lw / 2),
                config.lam,
                row_weights=st.out_fisher,
                max_codewords=config.max_codewords,
            )
        else:
            h = _importance(weight, dense_stats.get(name), mode, lw)
            r = rd_quantize(
                weight.reshape(-1),
                config.lam,
                importance=h,
                max_codewords=config.max_codewords,
                max_iter=config.max_iter,
                max_groups=config.max_groups,
            )
        _install(layer, r.codebook, r.indices, r.mask, weight.shape)
        q = r.values()
        norm = float(np.linalg.norm(weight))
        rel = float(np.linalg.norm(q - weight.reshape(-1))) / norm if norm > 0 else 0.0
        rows.append(
            LayerRD(
                name,
                weight.size,
                int(r.mask.sum()),
                int(r.codebook.size),
                r.rate_bits,
                rel,
                r.iterations,
            )
        )
    if use_data and config.bias_correction:
        _correct_biases(model, calibration, layers, dense_stats)
    if config.float16:
        round_float16_(model)
    return RDReport(tuple(rows), time.perf_counter() - t0)


@torch.no_grad()
def _correct_biases(
    model: nn.Module,
    calibration: torch.Tensor,
    layers: Mapping[str, nn.Module],
    dense: Mapping[str, _Stats],
) -> None:
    """Layer by layer in order: bias += dense mean output - quantized mean output.

    In order, because each correction changes the inputs of the layers after it: one
    forward pass per layer with a bias (the LeNets: 3-4 passes over a few hundred inputs).
    """
    for name, layer in layers.items():
        if getattr(layer, "bias", None) is None:
            continue
        now = _gather(model, calibration, [name], False)[name]
        shift = (dense[name].out_mean - now.out_mean).to(layer.bias.dtype)
        layer.bias.add_(shift.to(layer.bias.device))


# ----------------------------------------------------------------------- search


def encoded_size(
    model: nn.Module,
    *,
    coder: str = "best",
    gap_bits: int | str | Mapping[str, int | str] | None = "auto",
    metadata: dict[str, Any] | None = None,
) -> int:
    """Bytes of the ``.dcz`` file ``model`` would be written as (encoded in memory).

    The same records as :func:`deep_compression.encode.encode_model` writes, serialised by
    :func:`deep_compression.dcz.to_bytes`; pass the metadata the real file will hold for
    an exact count (it is part of the zlib-compressed header).
    """
    records = model_tensors(model, gap_bits, coder)
    meta = file_metadata(model, metadata).to_dict()
    return len(to_bytes(records, meta, coder=coder))


@dataclass(frozen=True)
class Trial:
    """One candidate of the search: its ``lam``, file bytes and validation error (%)."""

    lam: float
    file_bytes: int
    val_error: float


@dataclass(frozen=True)
class NoRetrainResult:
    """What :func:`compress_without_retraining` found.

    Attributes:
        model: the chosen quantized model (QuantizedWeight parametrizations installed;
            write it with ``encode_model(model, path, EncodeConfig(coder, gap_bits),
            metadata=...)``, the same coder and gap widths, to get ``file_bytes``).
        config: the :class:`NoRetrainConfig` that produced it.
        file_bytes: bytes of its ``.dcz`` (with the metadata given to the search).
        val_error: its validation error (%).
        dense_val_error: the dense model's validation error (%).
        trials: every candidate evaluated, in order.
        report: the chosen model's :class:`RDReport`.
        seconds: wall time of the search.
    """

    model: nn.Module
    config: NoRetrainConfig
    file_bytes: int
    val_error: float
    dense_val_error: float
    trials: tuple[Trial, ...]
    report: RDReport
    seconds: float


def compress_without_retraining(
    model: nn.Module,
    evaluate_fn: Callable[[nn.Module], float],
    max_error_increase: float,
    *,
    config: NoRetrainConfig | None = None,
    calibration: torch.Tensor | None = None,
    coder: str = "best",
    gap_bits: int | str | Mapping[str, int | str] | None = "auto",
    metadata: dict[str, Any] | None = None,
    lam_start: float | None = None,
    grow: float = 4.0,
    refine_steps: int = 6,
    max_trials: int = 40,
) -> NoRetrainResult:
    """The smallest ``.dcz`` whose validation error stays within a budget, no retraining.

    The search over ``lam`` (file size falls as ``lam`` grows): from ``lam_start``,
    multiply by ``grow`` while the candidate stays within budget (divide while it does
    not, if the start is already over), then bisect ``log(lam)`` between the last
    candidate within budget and the first beyond it for ``refine_steps`` steps. Error is
    not exactly monotone in ``lam``, so the answer is the smallest file among *all*
    candidates within budget, and each candidate's size is that of its real encoding.

    Args:
        model: the trained model; not modified (candidates are quantized copies).
        evaluate_fn: ``model -> validation error in percent`` (0..100). Give it a
            validation split carved from the training data; the test set is for the final
            report only.
        max_error_increase: the budget, in percentage points above the dense model's
            validation error.
        config: settings other than ``lam`` (default :class:`NoRetrainConfig`).
        calibration: optional model inputs for :func:`rd_quantize_`.
        coder, gap_bits, metadata: how candidates are sized (as the final file will be
            written; see :func:`encoded_size`).
        lam_start, grow, refine_steps, max_trials: the search schedule; ``lam_start``
            defaults to :data:`SEARCH_START` of the importance in use.

    Returns:
        The :class:`NoRetrainResult`; if no candidate meets the budget, the one with the
        lowest validation error is returned (check ``val_error``).

    Raises:
        ConfigError: bad arguments, or ``evaluate_fn`` returns a value outside 0..100.
    """
    t0 = time.perf_counter()
    budget_points = _positive(max_error_increase, "max_error_increase", allow_zero=True)
    base = config or NoRetrainConfig()
    mode = resolve_importance(base.importance, calibration is not None)
    lam0 = _positive(SEARCH_START[mode] if lam_start is None else lam_start, "lam_start")
    if _positive(grow, "grow") <= 1:
        raise ConfigError(f"grow must be > 1, got {grow!r}")
    _int(refine_steps, "refine_steps", 0, 100)
    _int(max_trials, "max_trials", 1, 10_000)
    if coder not in CODER_CHOICES:
        raise ConfigError(f"coder must be one of {', '.join(CODER_CHOICES)}, got {coder!r}")

    def error_of(m: nn.Module) -> float:
        e = evaluate_fn(m)
        if not (isinstance(e, int | float) and math.isfinite(e) and 0 <= e <= 100):
            raise ConfigError(f"evaluate_fn must return an error in percent (0..100), got {e!r}")
        return float(e)

    dense_error = error_of(model)
    limit = dense_error + budget_points
    trials: list[Trial] = []
    kept: dict[float, tuple[nn.Module, RDReport]] = {}  # candidates within budget

    def run(lam: float) -> bool:
        candidate = copy.deepcopy(model)
        cfg = base.with_lam(lam)
        report = rd_quantize_(candidate, cfg, calibration)
        size = encoded_size(candidate, coder=coder, gap_bits=gap_bits, metadata=metadata)
        err = error_of(candidate)
        trials.append(Trial(lam, size, err))
        ok = err <= limit
        if ok:
            kept[lam] = (candidate, report)
            # Only the smallest file within budget is needed; drop the other copies.
            best = min(kept, key=lambda k: next(t.file_bytes for t in trials if t.lam == k))
            for k in list(kept):
                if k != best:
                    del kept[k]
        return ok

    lam = lam0
    ok = run(lam)
    good, bad = (lam, None) if ok else (None, lam)
    # Bracket: grow while within budget, shrink while not.
    while len(trials) < max_trials:
        if good is not None and bad is None:
            lam = good * grow
            if run(lam):
                good = lam
            else:
                bad = lam
        elif bad is not None and good is None:
            lam = bad / grow
            if lam < 1e-12:
                break
            if run(lam):
                good = lam
            else:
                bad = lam
        else:
            break
    # Refine between them on a log scale.
    steps = 0
    while (
        good is not None and bad is not None and steps < refine_steps and len(trials) < max_trials
    ):
        lam = math.sqrt(good * bad)
        if run(lam):
            good = lam
        else:
            bad = lam
        steps += 1
    if kept:
        best_lam = next(iter(kept))
        chosen, report = kept[best_lam]
    else:  # nothing within budget: the most accurate candidate, re-made
        best_lam = min(trials, key=lambda t: (t.val_error, t.file_bytes)).lam
        chosen = copy.deepcopy(model)
        report = rd_quantize_(chosen, base.with_lam(best_lam), calibration)
    trial = next(t for t in trials if t.lam == best_lam)
    return NoRetrainResult(
        chosen,
        base.with_lam(best_lam),
        trial.file_bytes,
        trial.val_error,
        dense_error,
        tuple(trials),
        report,
        time.perf_counter() - t0,
    )
