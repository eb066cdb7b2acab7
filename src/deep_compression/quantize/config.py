"""The trained-quantization settings, as data: the ``[quantize]`` table of a TOML recipe.

One-to-one with :class:`QuantizeConfig`::

    [quantize]
    bits = { "*" = 5, "conv*" = 8 }   # index bits per layer: k = 2**bits centroids
    init = "linear"                   # linear | density | forgy | optimal
    lloyd_iterations = 20000          # at most; Lloyd stops at its fixed point
    seed = 0                          # seeds the forgy draw

    [quantize.finetune]               # train.TrainConfig for the centroid fine-tuning;
    epochs = 3                        # keys not given take FINETUNE_DEFAULTS (Adam,
    lr = 0.001                        # no weight decay, cosine schedule)

``bits`` keys are layer names or ``fnmatch`` patterns, resolved by
:mod:`deep_compression.layer_config` (exact name, then the longest matching pattern, then
``"*"``). A table given in a recipe replaces the default one entirely. Other tables of
the recipe (``[prune]``, ``[encode]``...) belong to other stages and are ignored here;
unknown keys inside ``[quantize]`` are errors.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from deep_compression.errors import ConfigError
from deep_compression.quantize.kmeans import INITS
from deep_compression.recipe_io import from_table, load_config
from deep_compression.train import TrainConfig

__all__ = [
    "DEFAULT_BITS",
    "FINETUNE_DEFAULTS",
    "MAX_BITS",
    "QuantizeConfig",
    "load_quantize_config",
]

# The paper's LeNet-5 / AlexNet choice: 8 bits for convolutions, 5 for everything else.
# Applied by layer type to every layer that no key of ``bits`` matches.
DEFAULT_BITS: Mapping[str, int] = MappingProxyType({"conv": 8, "other": 5})

# QuantizedWeight stores at most 2**16 centroids; indices are written as up to 16 bits.
MAX_BITS = 16

# Centroid fine-tuning. Each centroid's gradient is the *sum* of the gradients of the
# weights that share it (hundreds to thousands of them), so its scale varies by orders of
# magnitude across centroids and layers, and SGD at a weight-sized rate overshoots. Adam
# normalises each centroid's step to about ``lr``. Measured on magnitude-pruned LeNets
# (3 epochs): lr 1e-3 beat 1e-4 and SGD at 1e-3 and 1e-2 (LeNet-300-100 at 2 and 3 bits,
# LeNet-5 at conv 8 / fc 5 bits). No weight decay: it would pull the shared values of a
# whole layer towards zero together.
FINETUNE_DEFAULTS = TrainConfig(
    epochs=3, optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="cosine"
)


def _check_int(value: object, where: str, low: int, high: int | None = None) -> None:
    bad = isinstance(value, bool) or not isinstance(value, int) or value < low
    if bad or (high is not None and value > high):
        span = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ConfigError(f"{where} must be an integer {span}, got {value!r}")


@dataclass(frozen=True)
class QuantizeConfig:
    """How to quantize: per-layer bits, centroid initialisation, Lloyd, fine-tuning.

    Attributes:
        bits: index bits per layer, ``{"*": default, "type:Conv2d": ..., "fc1": ...}``
            (keys as in :mod:`deep_compression.layer_config`), each in ``1..16``; a layer
            gets ``k = 2**bits`` shared values (fewer if it has fewer distinct surviving
            weights). Layers no key matches get the paper's 8 bits for convolutions and
            5 for everything else; a key that matches no layer is an error.
        init: centroid initialisation: ``"linear"`` (the paper's best), ``"density"``,
            ``"forgy"`` or ``"optimal"`` (exact 1-D k-means).
        lloyd_iterations: at most this many Lloyd iterations after the initialisation
            (0: keep the initial centroids). Lloyd stops earlier at its fixed point; in
            1-D an iteration costs O(k log n), so the cap is generous.
        seed: seeds the ``forgy`` draw.
        finetune: training config of the centroid fine-tuning after clustering (only the
            codebooks and the biases are trained; ``epochs = 0`` skips it).
        float16: after fine-tuning, round every codebook and every bias of a quantized
            layer to the nearest float16 value (relative change <= 2^-11), so the ``.dcz``
            file stores them in 2 bytes instead of 4, losslessly. Beyond the paper; the
            accuracy is measured after rounding. BatchNorm parameters and statistics
            (stored dense) are rounded too.
        bn_batches: after fine-tuning, re-estimate every BatchNorm layer's running
            statistics on this many training batches (0: keep them).
    """

    bits: Mapping[str, int] = field(default_factory=dict)
    init: str = "linear"
    lloyd_iterations: int = 20_000
    seed: int = 0
    finetune: TrainConfig = FINETUNE_DEFAULTS
    float16: bool = False
    bn_batches: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.float16, bool):
            raise ConfigError(f"quantize.float16 must be true or false, got {self.float16!r}")
        if not isinstance(self.bits, Mapping):
            raise ConfigError(f"quantize.bits must be a table of layer -> bits, got {self.bits!r}")
        for key, value in self.bits.items():
            if not isinstance(key, str) or not key:
                raise ConfigError(f"quantize.bits: keys must be layer names, got {key!r}")
            _check_int(value, f"quantize.bits[{key!r}]", 1, MAX_BITS)
        # A read-only copy: the dataclass is frozen, its table should be too.
        object.__setattr__(self, "bits", MappingProxyType(dict(self.bits)))
        if self.init not in INITS:
            raise ConfigError(f"quantize.init must be one of {', '.join(INITS)}, got {self.init!r}")
        _check_int(self.lloyd_iterations, "quantize.lloyd_iterations", 0)
        _check_int(self.seed, "quantize.seed", 0)
        _check_int(self.bn_batches, "quantize.bn_batches", 0)
        if not isinstance(self.finetune, TrainConfig):
            raise ConfigError(f"quantize.finetune must be a TrainConfig, got {self.finetune!r}")

    def __hash__(self) -> int:
        # The generated hash would hash the (unhashable) read-only mapping.
        key = (tuple(sorted(self.bits.items())), self.init, self.lloyd_iterations, self.seed)
        return hash((*key, self.finetune, self.float16, self.bn_batches))

    def to_dict(self) -> dict[str, Any]:
        """The ``[quantize]`` table (inverse of :meth:`from_dict`)."""
        d = {
            "bits": dict(self.bits),
            "init": self.init,
            "lloyd_iterations": self.lloyd_iterations,
            "seed": self.seed,
            "finetune": self.finetune.to_dict(),
            "float16": self.float16,
        }
        if self.bn_batches:  # only when used: recipes without it keep their digests
            d["bn_batches"] = self.bn_batches
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "quantize") -> QuantizeConfig:
        """Build from the ``[quantize]`` table; unknown keys are a :class:`ConfigError`.

        ``finetune`` keys not given take :data:`FINETUNE_DEFAULTS`.
        """

        def bits(value: Any, here: str) -> Any:
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f'{here} must be a table such as {{ "*" = 5, "conv*" = 8 }}, got {value!r}'
                )
            return value

        def finetune(value: Any, here: str) -> TrainConfig:
            return FINETUNE_DEFAULTS.merged(value, here)

        config = from_table(cls, d, where, {"bits": bits, "finetune": finetune})
        if "finetune" not in d:
            config = dataclasses.replace(config, finetune=FINETUNE_DEFAULTS)
        return config


def load_quantize_config(path: str | os.PathLike[str]) -> QuantizeConfig:
    """Read the ``[quantize]`` table of a TOML recipe file.

    Raises:
        ConfigError: unreadable file, invalid TOML, no ``[quantize]`` table, or bad values.
    """
    return load_config(path, QuantizeConfig.from_dict, "quantize")
