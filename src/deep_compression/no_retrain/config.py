"""Settings and reports of compression without retraining (see :mod:`.no_retrain`).

:class:`NoRetrainConfig` with its validation, the importance modes, where the ``lam``
search starts, and the per-layer :class:`LayerRD` / :class:`RDReport`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from deep_compression.dcz import CODER_CHOICES
from deep_compression.errors import ConfigError
from deep_compression.quantize.rdq import MAX_CODEWORDS
from deep_compression.recipe_io import from_table, reject_unknown

__all__ = [
    "AUTO_CALIBRATED",
    "check_search",
    "positive_number",
    "IMPORTANCES",
    "CALIBRATION_IMAGES",
    "LayerRD",
    "NoRetrainConfig",
    "NoRetrainPlan",
    "RDReport",
    "SEARCH_START",
    "resolve_importance",
    "search_importances",
]

IMPORTANCES = ("auto", "weights", "inputs", "fisher", "gptq", "gptq-fisher", "measured")

# What importance = "auto" means with calibration inputs: measured (benchmarks/no_retrain.py)
# within 0.1 points of the dense test error, gptq-fisher was the smaller file on LeNet-5
# (72.0 KB vs 89-108 KB for gptq, whose compensation ran away on fc1) and within 5% of
# gptq on LeNet-300-100.
AUTO_CALIBRATED = "gptq-fisher"

# What the search of importance = "auto" tries with calibration inputs, keeping the smaller
# file within budget: neither wins everywhere. Measured on held-out dense checkpoints
# (benchmarks/no_retrain.py): gptq-fisher gives LeNet-300-100 a file half the size of the
# data-free one, while on LeNet-5 the per-feature weighting misleads (fc1's ReLU features:
# at 62 KB "inputs" is +0.22 points on validation, "weights" +0.06 at 43 KB).
AUTO_SEARCH = (AUTO_CALIBRATED, "weights")

# Where the search starts, per importance (the scale of lam differs: relative error per
# bit for weights/inputs/gptq, loss per bit for the Fisher ones). Measured on the dense
# LeNets: files within 0.1 points of the dense error sit at lam ~ 1e-7 (weights, gptq),
# 3e-7 (inputs), 3e-9 (gptq-fisher), 1e-9 (fisher).
SEARCH_START = MappingProxyType(
    {
        "weights": 1e-7,
        "inputs": 3e-7,
        "fisher": 1e-9,
        "gptq": 1e-7,
        "gptq-fisher": 3e-9,
        "measured": 3e-8,  # KL per bit
    }
)


def positive_number(value: object, where: str, *, allow_zero: bool = False) -> float:
    """``value`` as a float if it is a finite number > 0 (``>= 0`` with ``allow_zero``),
    else :class:`ConfigError` naming ``where``."""
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
            energy, with GPTQ/OBS error compensation: :func:`rdq.rd_gptq`),
            ``"measured"`` (each layer's relative error times the output divergence it
            causes per squared relative error, measured: :mod:`.sensitivity`), or
            ``"auto"``: ``"gptq-fisher"`` with calibration inputs, else ``"weights"``.
            ``"inputs"``, ``"fisher"``, ``"gptq"`` and ``"measured"`` need calibration
            inputs.
        layer_weights: per-layer multiplier of the distortion, ``{"*": 1.0, "fc3": 4.0}``
            (a larger weight quantizes that layer more finely).
        bias_correction: with calibration inputs, correct each bias for the mean shift
            of its layer's output (ignored without calibration).
        float16: round codebooks and biases to float16 values, which the file then stores
            in 2 bytes (relative change <= 2^-11).
        max_codewords: at most this many codewords per layer in the initial grid.
        max_iter: at most this many Lloyd iterations per layer.
        max_groups: importance groups per layer (see ``rdq_lloyd.group_importance``).
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
        positive_number(self.lam, "no_retrain.lam", allow_zero=False)
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
            positive_number(value, f"no_retrain.layer_weights[{key!r}]")
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

    def to_dict(self) -> dict[str, Any]:
        """The ``[no_retrain]`` keys of these settings (as :meth:`NoRetrainPlan.from_dict`
        reads them)."""
        return {
            "lam": self.lam,
            "importance": self.importance,
            "layer_weights": dict(self.layer_weights),
            "bias_correction": self.bias_correction,
            "float16": self.float16,
            "max_codewords": self.max_codewords,
            "max_iter": self.max_iter,
            "max_groups": self.max_groups,
        }

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


# Training images whose activations weight the quantization. 2,048 rather than a few
# hundred: GPTQ needs a full-rank input covariance (LeNet-300-100's fc1 has 784 inputs),
# measured on a held-out LeNet-300-100 within dense + 0.1 test points, gptq-fisher needed
# 41,228 B with 512 images and 29,341 B with 2,048. The statistics are sums over chunks,
# so memory does not grow with the count.
CALIBRATION_IMAGES = 2048
# A budget holds when it does with this confidence (one-sided; deep_compression.selection).
DEFAULT_CONFIDENCE = 0.9


@dataclass(frozen=True)
class NoRetrainPlan:
    """A recipe's ``[no_retrain]`` table: compression without any training step.

    ::

        [no_retrain]
        max_error_increase = 0.1   # search lam: the smallest file within 0.1 points of
                                   # the dense validation error; omit it to quantize once
        lam = 1.4e-6               # with a search: where it starts; without: the setting
        importance = "auto"        # and the other NoRetrainConfig settings
        calibration = 2048         # training images weighting the error; 0 = data-free
        confidence = 0.9           # the budget holds with this confidence (paired test)

    Attributes:
        config: the :class:`NoRetrainConfig` (``lam`` is the setting itself without a
            search, the search's start with one).
        max_error_increase: the budget in points of validation error, or None: quantize
            once with ``config.lam``.
        calibration: training images for the calibrated importances and the bias
            correction (0: none, data-free).
        lam_given: whether the table set ``lam`` (a search then starts there).
        confidence: a candidate is within the budget when its error increase over the
            dense model, on the same images, is within it with this confidence
            (:mod:`deep_compression.selection`).
    """

    config: NoRetrainConfig = field(default_factory=NoRetrainConfig)
    max_error_increase: float | None = None
    calibration: int = CALIBRATION_IMAGES
    lam_given: bool = False
    confidence: float = DEFAULT_CONFIDENCE

    def __post_init__(self) -> None:
        if not isinstance(self.config, NoRetrainConfig):
            raise ConfigError(f"no_retrain: expected settings, got {self.config!r}")
        if self.max_error_increase is not None:
            where = "no_retrain.max_error_increase"
            positive_number(self.max_error_increase, where, allow_zero=True)
        elif not self.lam_given:
            raise ConfigError(
                "no_retrain: give max_error_increase (search lam on the validation split) "
                "or lam (quantize once)"
            )
        _int(self.calibration, "no_retrain.calibration", 0, 1_000_000)
        c = self.confidence
        if isinstance(c, bool) or not isinstance(c, int | float) or not 0.5 <= c < 1:
            raise ConfigError(f"no_retrain.confidence must be in [0.5, 1), got {c!r}")
        if self.config.importance not in ("auto", "weights") and self.calibration == 0:
            raise ConfigError(
                f"no_retrain.importance = {self.config.importance!r} needs calibration "
                "images (calibration > 0)"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "no_retrain") -> NoRetrainPlan:
        """Build from the ``[no_retrain]`` table; unknown keys are a :class:`ConfigError`."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where}: expected a table, got {d!r}")
        plan_keys = {"max_error_increase", "calibration", "confidence"}
        config_keys = set(NoRetrainConfig.__dataclass_fields__)
        reject_unknown(d, plan_keys | config_keys, where)
        known = {k: v for k, v in d.items() if k in config_keys}
        config = from_table(NoRetrainConfig, known, where)
        return cls(
            config,
            d.get("max_error_increase"),
            d.get("calibration", CALIBRATION_IMAGES),
            "lam" in d,
            d.get("confidence", DEFAULT_CONFIDENCE),
        )

    def to_dict(self) -> dict[str, Any]:
        d = self.config.to_dict()
        if not self.lam_given:
            del d["lam"]
        if self.max_error_increase is not None:
            d["max_error_increase"] = self.max_error_increase
        d["calibration"] = self.calibration
        if self.confidence != DEFAULT_CONFIDENCE:  # earlier recipes keep their digests
            d["confidence"] = self.confidence
        return d


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
        bias_corrected: the bias absorbed the shift of the layer's mean output (with
            calibration inputs, when that brought the outputs closer to the dense model's).
    """

    name: str
    weights: int
    kept: int
    codebook_size: int
    model_bits: float
    relative_error: float
    iterations: int
    bias_corrected: bool = False


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


def search_importances(importance: str, calibrated: bool) -> tuple[str, ...]:
    """The importances a search with ``importance`` tries: with calibration inputs,
    ``"auto"`` is :data:`AUTO_SEARCH`; otherwise the one :func:`resolve_importance` gives."""
    if importance == "auto" and calibrated:
        return AUTO_SEARCH
    return (resolve_importance(importance, calibrated),)


def check_search(
    max_error_increase: float,
    lam_start: float | None,
    grow: float,
    refine_steps: int,
    max_trials: int,
    coder: str,
) -> float:
    """Validate :func:`compress_without_retraining`'s schedule; returns the budget."""
    budget_points = positive_number(max_error_increase, "max_error_increase", allow_zero=True)
    if lam_start is not None:
        positive_number(lam_start, "lam_start")
    if positive_number(grow, "grow") <= 1:
        raise ConfigError(f"grow must be > 1, got {grow!r}")
    _int(refine_steps, "refine_steps", 0, 100)
    _int(max_trials, "max_trials", 1, 10_000)
    if coder not in CODER_CHOICES:
        raise ConfigError(f"coder must be one of {', '.join(CODER_CHOICES)}, got {coder!r}")
    return budget_points
