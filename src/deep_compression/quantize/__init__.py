"""Stage 2: trained quantization (per-layer k-means codebooks, trained centroids)."""

from deep_compression.quantize.config import (
    DEFAULT_BITS,
    FINETUNE_DEFAULTS,
    MAX_BITS,
    QuantizeConfig,
    load_quantize_config,
)
from deep_compression.quantize.core import (
    LayerQuantization,
    QuantizationReport,
    layer_bits,
    quantization_report,
    quantize_,
    quantized_weight,
    round_float16_,
    strip_quantization_,
)
from deep_compression.quantize.parametrization import QuantizedWeight

__all__ = [
    "DEFAULT_BITS",
    "FINETUNE_DEFAULTS",
    "MAX_BITS",
    "LayerQuantization",
    "QuantizationReport",
    "QuantizeConfig",
    "QuantizedWeight",
    "layer_bits",
    "load_quantize_config",
    "quantization_report",
    "quantize_",
    "quantized_weight",
    "round_float16_",
    "strip_quantization_",
]
