"""The ``.dcz`` compressed-model file: writer, validating reader, torch-free decoder.

>>> import numpy as np
>>> from deep_compression.dcz import QuantizedTensor, decode, to_bytes
>>> blob = to_bytes([QuantizedTensor("w", (2, 3), np.array([1, 5]), np.array([0, 1]),
...                                  np.array([-0.5, 0.25], np.float32), gap_bits=2)], {})
>>> arrays, meta = decode(blob)
>>> arrays["w"].tolist()
[[0.0, -0.5, 0.0], [0.0, 0.0, 0.25]]

Importing this package does not import torch (a test checks ``sys.modules``). The byte
layout is specified in ``docs/FORMAT.md``.
"""

from deep_compression.dcz.format import DEFAULT_CHUNK, DEFAULT_MAX_OUTPUT_BYTES, MAGIC, VERSION
from deep_compression.dcz.reader import DczFile, StreamStats, TensorStats, decode, open_dcz
from deep_compression.dcz.records import DenseTensor, QuantizedTensor, SparseTensor, Tensor
from deep_compression.dcz.writer import CODER_CHOICES, to_bytes, write_dcz

__all__ = [
    "CODER_CHOICES",
    "DEFAULT_CHUNK",
    "DEFAULT_MAX_OUTPUT_BYTES",
    "MAGIC",
    "VERSION",
    "DczFile",
    "DenseTensor",
    "QuantizedTensor",
    "SparseTensor",
    "StreamStats",
    "Tensor",
    "TensorStats",
    "decode",
    "open_dcz",
    "to_bytes",
    "write_dcz",
]
