"""Deep Compression for PyTorch: prune, quantize, entropy-code, ship one small file.

The pipeline, one subpackage per stage::

    data -> models -> train -> prune -> quantize -> coding (gaps, Huffman/ANS) -> dcz -> report

Importing this package is cheap and does not import torch: the ``.dcz`` decoder
(:mod:`deep_compression.dcz`) runs with numpy alone. Import the torch-side stages
explicitly, e.g. ``from deep_compression.prune import prune_``.
"""

from __future__ import annotations

from deep_compression.errors import ConfigError, DataError, DeepCompressionError, FormatError

__version__ = "0.1.0"

__all__ = ["__version__", "ConfigError", "DataError", "DeepCompressionError", "FormatError"]
