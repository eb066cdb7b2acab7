"""Stage 2: trained quantization (per-layer k-means codebooks, trained centroids)."""

from deep_compression.quantize.parametrization import QuantizedWeight

__all__ = ["QuantizedWeight"]
